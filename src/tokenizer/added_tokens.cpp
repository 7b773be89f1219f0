// Added-token matching: see added_tokens.h.
#include "tokenizer/added_tokens.h"

#include <cctype>

#include "tokenizer/components.h"
#include "tokenizer/utf8.h"

namespace sy {
namespace {

char32_t char_before(std::string_view text, size_t pos) {
  size_t start = pos - 1;
  while (start > 0 && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
  return utf8::next(text, start);
}

// single_word boundaries: ASCII alphanumerics and '_' are word characters; non-ASCII
// characters other than whitespace count as word characters too (an approximation of
// Rust's char::is_alphanumeric that only matters for single_word tokens next to symbols).
bool is_word_char(char32_t cp) {
  if (cp < 0x80) return cp == '_' || std::isalnum(static_cast<int>(cp));
  return !is_unicode_whitespace(cp);
}

}  // namespace

void AddedTokenMatcher::add(const AddedToken& token, std::string pattern) {
  if (pattern.empty()) return;
  int32_t node = 0;
  for (unsigned char c : pattern) {
    auto it = nodes_[node].children.find(c);
    if (it == nodes_[node].children.end()) {
      nodes_.push_back(Node{});
      const auto child = static_cast<int32_t>(nodes_.size() - 1);
      nodes_[node].children[c] = child;
      node = child;
    } else {
      node = it->second;
    }
  }
  if (nodes_[node].token < 0) {  // the first token with a given content wins
    nodes_[node].token = static_cast<int32_t>(tokens_.size());
    tokens_.push_back(token);
  }
}

std::vector<Section> AddedTokenMatcher::split(std::string_view text) const {
  struct Match {
    size_t begin, end;
    int32_t id;
  };
  std::vector<Match> matches;
  size_t pos = 0;
  while (pos < text.size()) {
    // Longest token starting at pos.
    int32_t node = 0, best = -1;
    size_t best_end = 0;
    for (size_t i = pos; i < text.size(); ++i) {
      auto it = nodes_[node].children.find(static_cast<unsigned char>(text[i]));
      if (it == nodes_[node].children.end()) break;
      node = it->second;
      if (nodes_[node].token >= 0) {
        best = nodes_[node].token;
        best_end = i + 1;
      }
    }
    if (best < 0) {
      pos += utf8::sequence_length(static_cast<unsigned char>(text[pos]));
      continue;
    }
    const AddedToken& tok = tokens_[best];
    size_t begin = pos, end = best_end;
    pos = best_end;
    if (tok.single_word) {
      const bool start_ok = begin == 0 || !is_word_char(char_before(text, begin));
      size_t p = end;
      const bool stop_ok = end == text.size() || !is_word_char(utf8::next(text, p));
      if (!start_ok || !stop_ok) continue;
    }
    const size_t floor = matches.empty() ? 0 : matches.back().end;
    if (tok.lstrip) {
      while (begin > floor && is_unicode_whitespace(char_before(text, begin))) {
        size_t start = begin - 1;
        while ((static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        begin = start;
      }
    }
    if (tok.rstrip) {
      while (end < text.size()) {
        size_t p = end;
        if (!is_unicode_whitespace(utf8::next(text, p))) break;
        end = p;
      }
      pos = end;
    }
    matches.push_back({begin, end, tok.id});
  }
  std::vector<Section> sections;
  size_t prev = 0;
  for (const Match& m : matches) {
    if (m.begin > prev)
      sections.push_back({std::string(text.substr(prev, m.begin - prev)), std::nullopt, prev});
    sections.push_back({std::string(text.substr(m.begin, m.end - m.begin)), m.id, m.begin});
    prev = m.end;
  }
  if (prev < text.size()) sections.push_back({std::string(text.substr(prev)), std::nullopt, prev});
  return sections;
}

}  // namespace sy
