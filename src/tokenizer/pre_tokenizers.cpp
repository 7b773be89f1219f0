// Pre-tokenizers: ByteLevel, Split, Sequence, Metaspace, Digits, Whitespace, WhitespaceSplit,
// with HF's split-delimiter behaviours (tokenizers/src/tokenizer/normalizer.rs).
#include "tokenizer/components.h"
#include "tokenizer/utf8.h"

namespace sy {

// GPT-2's pre-tokenizer regex (HF ByteLevel with use_regex = true).
static const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

std::vector<Piece> PreTokenizer::apply(std::vector<Piece> pieces) const {
  std::vector<Piece> out;
  for (const Piece& p : pieces) {
    for (Piece& q : split(p)) out.push_back(std::move(q));
  }
  return out;
}

std::vector<Piece> split_at_matches(const Piece& piece,
                                    const std::vector<std::pair<size_t, size_t>>& matches,
                                    SplitBehavior behavior, bool invert) {
  // (range, is_match) covering the whole text, as HF's Pattern::find_matches.
  struct Span {
    size_t begin, end;
    bool is_match;
  };
  std::vector<Span> spans;
  const size_t n = piece.text.size();
  if (n == 0) {
    spans.push_back({0, 0, false});
  } else {
    size_t prev = 0;
    for (auto [b, e] : matches) {
      if (prev != b) spans.push_back({prev, b, false});
      spans.push_back({b, e, true});
      prev = e;
    }
    if (prev != n) spans.push_back({prev, n, false});
  }
  if (invert) {
    for (Span& s : spans) s.is_match = !s.is_match;
  }
  std::vector<Span> kept;  // is_match here means "remove"
  switch (behavior) {
    case SplitBehavior::Removed:
      kept = spans;
      break;
    case SplitBehavior::Isolated:
      for (Span s : spans) kept.push_back({s.begin, s.end, false});
      break;
    case SplitBehavior::MergedWithPrevious: {
      bool previous_match = false;
      for (Span s : spans) {
        if (s.is_match && !previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
    case SplitBehavior::MergedWithNext: {
      bool previous_match = false;
      for (auto it = spans.rbegin(); it != spans.rend(); ++it) {
        if (it->is_match && !previous_match && !kept.empty()) {
          kept.back().begin = it->begin;
        } else {
          kept.push_back({it->begin, it->end, false});
        }
        previous_match = it->is_match;
      }
      std::reverse(kept.begin(), kept.end());
      break;
    }
    case SplitBehavior::Contiguous: {
      bool previous_match = false;
      for (Span s : spans) {
        if (s.is_match == previous_match && !kept.empty()) {
          kept.back().end = s.end;
        } else {
          kept.push_back({s.begin, s.end, false});
        }
        previous_match = s.is_match;
      }
      break;
    }
  }
  std::vector<Piece> out;
  for (const Span& s : kept) {
    if (s.is_match || s.end == s.begin) continue;
    out.push_back({piece.text.substr(s.begin, s.end - s.begin), piece.at_origin && s.begin == 0});
  }
  return out;
}

namespace {

class SplitPreTokenizer : public PreTokenizer {
 public:
  SplitPreTokenizer(Regex p, SplitBehavior b, bool inv)
      : pattern(std::move(p)), behavior(b), invert(inv) {}
  Regex pattern;
  SplitBehavior behavior;
  bool invert;
  std::vector<Piece> split(const Piece& piece) const override {
    return split_at_matches(piece, pattern.find_all(piece.text), behavior, invert);
  }
};

class ByteLevelPreTokenizer : public PreTokenizer {
 public:
  bool add_prefix_space = false;
  std::optional<Regex> pattern;  // unset when use_regex is false
  std::vector<Piece> split(const Piece& piece) const override {
    Piece p = piece;
    if (add_prefix_space && (p.text.empty() || p.text[0] != ' ')) p.text.insert(0, " ");
    std::vector<Piece> parts =
        pattern ? split_at_matches(p, pattern->find_all(p.text), SplitBehavior::Isolated, false)
                : std::vector{p};
    const auto& table = utf8::byte_to_char();
    for (Piece& part : parts) {
      std::string mapped;
      mapped.reserve(part.text.size() * 2);
      for (unsigned char b : part.text) utf8::append(mapped, table[b]);
      part.text = std::move(mapped);
    }
    return parts;
  }
};

class MetaspacePreTokenizer : public PreTokenizer {
 public:
  enum class Prepend { Always, First, Never };
  std::string replacement;
  Prepend prepend = Prepend::Always;
  bool split_words = true;
  std::optional<Regex> replacement_pattern;
  std::vector<Piece> split(const Piece& piece) const override {
    Piece p = piece;
    std::string replaced;
    for (char c : p.text) {
      if (c == ' ') {
        replaced += replacement;
      } else {
        replaced += c;
      }
    }
    p.text = std::move(replaced);
    const bool starts = p.text.compare(0, replacement.size(), replacement) == 0;
    if (!starts && (prepend == Prepend::Always || (prepend == Prepend::First && p.at_origin))) {
      p.text.insert(0, replacement);
    }
    if (!split_words) return {p};
    return split_at_matches(p, replacement_pattern->find_all(p.text), SplitBehavior::MergedWithNext,
                            false);
  }
};

class SequencePreTokenizer : public PreTokenizer {
 public:
  std::vector<std::unique_ptr<PreTokenizer>> steps;
  std::vector<Piece> split(const Piece& piece) const override {
    std::vector<Piece> pieces{piece};
    for (const auto& step : steps) pieces = step->apply(std::move(pieces));
    return pieces;
  }
};

SplitBehavior parse_behavior(const std::string& name, const std::string& path, const JsonCtx& ctx) {
  if (name == "Removed") return SplitBehavior::Removed;
  if (name == "Isolated") return SplitBehavior::Isolated;
  if (name == "MergedWithPrevious") return SplitBehavior::MergedWithPrevious;
  if (name == "MergedWithNext") return SplitBehavior::MergedWithNext;
  if (name == "Contiguous") return SplitBehavior::Contiguous;
  ctx.error(fmt::format("unknown split behavior '{}' at '{}.behavior'", name, path));
}

}  // namespace

std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& path,
                                                  const JsonCtx& ctx) {
  if (j.is_null()) return nullptr;
  const std::string type = ctx.type(j, path);
  const std::string where = fmt::format("tokenizer.json: '{}' in {}", path, ctx.origin);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequencePreTokenizer>();
    const json& list = ctx.require(j, "pretokenizers", path);
    if (!list.is_array()) ctx.error(fmt::format("'{}.pretokenizers' must be an array", path));
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = parse_pre_tokenizer(list[i], fmt::format("{}.pretokenizers[{}]", path, i), ctx);
      if (step) seq->steps.push_back(std::move(step));
    }
    return seq;
  }
  if (type == "Split") {
    return std::make_unique<SplitPreTokenizer>(
        parse_pattern(ctx.require(j, "pattern", path), path + ".pattern", ctx),
        parse_behavior(ctx.str(j, "behavior", path), path, ctx),
        ctx.boolean(j, "invert", path, false));
  }
  if (type == "ByteLevel") {
    auto b = std::make_unique<ByteLevelPreTokenizer>();
    b->add_prefix_space = ctx.boolean(j, "add_prefix_space", path, true);
    if (ctx.boolean(j, "use_regex", path, true)) b->pattern.emplace(kGpt2Pattern, where);
    return b;
  }
  if (type == "Metaspace") {
    auto m = std::make_unique<MetaspacePreTokenizer>();
    m->replacement = ctx.str(j, "replacement", path, "\u2581");
    if (m->replacement.empty()) ctx.error(fmt::format("'{}.replacement' must not be empty", path));
    if (j.contains("prepend_scheme") && !j["prepend_scheme"].is_null()) {
      const std::string scheme = ctx.str(j, "prepend_scheme", path);
      if (scheme == "always") {
        m->prepend = MetaspacePreTokenizer::Prepend::Always;
      } else if (scheme == "first") {
        m->prepend = MetaspacePreTokenizer::Prepend::First;
      } else if (scheme == "never") {
        m->prepend = MetaspacePreTokenizer::Prepend::Never;
      } else {
        ctx.error(fmt::format("unknown prepend_scheme '{}' at '{}'", scheme, path));
      }
    } else {  // older files: add_prefix_space
      m->prepend = ctx.boolean(j, "add_prefix_space", path, true)
                       ? MetaspacePreTokenizer::Prepend::Always
                       : MetaspacePreTokenizer::Prepend::Never;
    }
    m->split_words = ctx.boolean(j, "split", path, true);
    m->replacement_pattern.emplace(Regex::literal(m->replacement, where));
    return m;
  }
  if (type == "Digits") {
    // Rust's char::is_numeric is the Unicode N categories.
    return std::make_unique<SplitPreTokenizer>(Regex("\\p{N}", where),
                                               ctx.boolean(j, "individual_digits", path, false)
                                                   ? SplitBehavior::Isolated
                                                   : SplitBehavior::Contiguous,
                                               false);
  }
  if (type == "Whitespace") {
    return std::make_unique<SplitPreTokenizer>(Regex(R"(\w+|[^\w\s]+)", where),
                                               SplitBehavior::Removed, true);
  }
  if (type == "WhitespaceSplit") {
    return std::make_unique<SplitPreTokenizer>(Regex(R"(\s)", where), SplitBehavior::Removed,
                                               false);
  }
  ctx.error(fmt::format("unsupported pre_tokenizer type '{}' at '{}'", type, path));
}

}  // namespace sy
