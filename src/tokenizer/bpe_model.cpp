// BPE model: see bpe_model.h.
#include "tokenizer/bpe_model.h"

#include <algorithm>
#include <queue>

#include "tokenizer/utf8.h"

namespace sy {

static uint64_t pair_key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

BpeModel BpeModel::from_json(const json& model, const std::string& path, const JsonCtx& ctx) {
  BpeModel m;
  const json& vocab = ctx.require(model, "vocab", path);
  if (!vocab.is_object()) ctx.error(fmt::format("'{}.vocab' must be an object", path));
  // Ids index a table: one far beyond the vocabulary's size would allocate by the file's word.
  const int64_t max_id =
      std::max<int64_t>(2 * int64_t(vocab.size()), int64_t(vocab.size()) + 65536);
  for (auto it = vocab.begin(); it != vocab.end(); ++it) {
    if (!it.value().is_number_integer() || it.value().get<int64_t>() < 0 ||
        it.value().get<int64_t>() > INT32_MAX) {
      ctx.error(fmt::format("'{}.vocab[{}]' must be a non-negative 32-bit integer id", path,
                            excerpt_text(it.key())));
    }
    if (it.value().get<int64_t>() >= max_id)
      ctx.error(fmt::format("'{}.vocab[{}]' = {} is far beyond the vocabulary's {} entries", path,
                            excerpt_text(it.key()), it.value().get<int64_t>(), vocab.size()));
    const auto id = it.value().get<int32_t>();
    m.vocab_[it.key()] = id;
    if (static_cast<size_t>(id) >= m.id_to_token_.size()) {
      m.id_to_token_.resize(id + 1);
      m.has_id_.resize(id + 1, false);
    }
    m.id_to_token_[id] = it.key();
    m.has_id_[id] = true;
  }
  m.byte_fallback_ = ctx.boolean(model, "byte_fallback", path, false);
  m.fuse_unk_ = ctx.boolean(model, "fuse_unk", path, false);
  m.ignore_merges_ = ctx.boolean(model, "ignore_merges", path, false);
  m.prefix_ = ctx.str(model, "continuing_subword_prefix", path, "");
  m.suffix_ = ctx.str(model, "end_of_word_suffix", path, "");
  const std::string unk = ctx.str(model, "unk_token", path, "");
  if (!unk.empty()) {
    auto id = m.token_to_id(unk);
    if (!id)
      ctx.error(fmt::format("'{}.unk_token' {} is not in the vocab", path, excerpt_text(unk)));
    m.unk_id_ = *id;
  }
  for (int b = 0; b < 256; ++b) {
    auto id = m.token_to_id(fmt::format("<0x{:02X}>", b));
    m.byte_ids_[b] = id ? *id : -1;
  }

  const json& merges = ctx.require(model, "merges", path);
  if (!merges.is_array()) ctx.error(fmt::format("'{}.merges' must be an array", path));
  for (size_t rank = 0; rank < merges.size(); ++rank) {
    const json& merge = merges[rank];
    std::string left, right;
    if (merge.is_string()) {  // "a b"
      const std::string s = merge.get<std::string>();
      const size_t space = s.find(' ');
      if (space == std::string::npos || s.find(' ', space + 1) != std::string::npos) {
        ctx.error(fmt::format("'{}.merges[{}]' = \"{}\" must be two tokens separated by one space",
                              path, rank, s));
      }
      left = s.substr(0, space);
      right = s.substr(space + 1);
    } else if (merge.is_array() && merge.size() == 2 && merge[0].is_string() &&
               merge[1].is_string()) {
      left = merge[0].get<std::string>();
      right = merge[1].get<std::string>();
    } else {
      ctx.error(fmt::format("'{}.merges[{}]' must be \"a b\" or [\"a\", \"b\"]", path, rank));
    }
    std::string merged =
        left + (!m.prefix_.empty() && right.starts_with(m.prefix_) ? right.substr(m.prefix_.size())
                                                                   : right);
    auto a = m.token_to_id(left), b = m.token_to_id(right), c = m.token_to_id(merged);
    if (!a || !b || !c) {
      ctx.error(fmt::format("'{}.merges[{}]' ({}, {}): token {} is not in the vocab", path, rank,
                            excerpt_text(left), excerpt_text(right),
                            excerpt_text(!a   ? left
                                         : !b ? right
                                              : merged)));
    }
    m.merges_.try_emplace(pair_key(*a, *b), static_cast<int32_t>(rank),
                          *c);  // first (lowest) rank wins
  }
  return m;
}

std::optional<int32_t> BpeModel::token_to_id(std::string_view token) const {
  auto it = vocab_.find(token);
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}

const std::string* BpeModel::id_to_token(int32_t id) const {
  if (id < 0 || static_cast<size_t>(id) >= id_to_token_.size() || !has_id_[id]) return nullptr;
  return &id_to_token_[id];
}

void BpeModel::tokenize(std::string_view word, std::vector<int32_t>& out) const {
  if (word.empty()) return;
  if (ignore_merges_) {
    if (auto id = token_to_id(word)) {
      out.push_back(*id);
      return;
    }
  }
  // Initial symbols: one per character (byte tokens for unknown characters with byte_fallback).
  struct Symbol {
    int32_t id;
    int32_t prev, next;
    bool alive;
  };
  std::vector<Symbol> symbols;
  symbols.reserve(word.size());
  bool last_unk = false;
  std::string piece;
  for (size_t pos = 0; pos < word.size();) {
    const size_t start = pos;
    utf8::next(word, pos);
    piece.clear();
    if (start > 0) piece += prefix_;
    piece.append(word.substr(start, pos - start));
    if (pos == word.size()) piece += suffix_;
    if (auto id = token_to_id(piece)) {
      symbols.push_back({*id, 0, 0, true});
      last_unk = false;
      continue;
    }
    if (byte_fallback_) {
      bool all = true;
      for (size_t i = start; i < pos; ++i)
        all = all && byte_ids_[static_cast<unsigned char>(word[i])] >= 0;
      if (all) {
        for (size_t i = start; i < pos; ++i)
          symbols.push_back({byte_ids_[static_cast<unsigned char>(word[i])], 0, 0, true});
        last_unk = false;
        continue;
      }
    }
    if (unk_id_) {
      if (!(fuse_unk_ && last_unk)) symbols.push_back({*unk_id_, 0, 0, true});
      last_unk = true;
    }
  }
  const auto n = static_cast<int32_t>(symbols.size());
  for (int32_t i = 0; i < n; ++i) {
    symbols[i].prev = i - 1;
    symbols[i].next = i + 1 < n ? i + 1 : -1;
  }

  struct Candidate {
    int32_t rank, pos, new_id;
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::priority_queue<Candidate, std::vector<Candidate>, std::greater<>> queue;
  auto consider = [&](int32_t left) {
    if (left < 0 || symbols[left].next < 0) return;
    auto it = merges_.find(pair_key(symbols[left].id, symbols[symbols[left].next].id));
    if (it != merges_.end()) queue.push({it->second.first, left, it->second.second});
  };
  for (int32_t i = 0; i + 1 < n; ++i) consider(i);
  while (!queue.empty()) {
    const Candidate top = queue.top();
    queue.pop();
    Symbol& left = symbols[top.pos];
    if (!left.alive || left.next < 0) continue;
    // Stale entry: the pair at this position changed since it was queued.
    auto it = merges_.find(pair_key(left.id, symbols[left.next].id));
    if (it == merges_.end() || it->second.second != top.new_id || it->second.first != top.rank)
      continue;
    Symbol& right = symbols[left.next];
    left.id = top.new_id;
    right.alive = false;
    left.next = right.next;
    if (right.next >= 0) symbols[right.next].prev = top.pos;
    consider(left.prev);
    consider(top.pos);
  }
  for (int32_t i = 0; i < n && n > 0; i = symbols[i].next) {
    out.push_back(symbols[i].id);
    if (symbols[i].next < 0) break;
  }
}

}  // namespace sy
