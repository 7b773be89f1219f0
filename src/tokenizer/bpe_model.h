// The BPE model of tokenizer.json: vocab + ranked merges applied with a priority queue
// (lowest rank first, leftmost on ties, as HF's Word::merge_all), byte fallback, unk fusing.
#pragma once

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "tokenizer/json_util.h"

namespace sy {

struct StringHash {
  using is_transparent = void;
  size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};
using StringIdMap = std::unordered_map<std::string, int32_t, StringHash, std::equal_to<>>;

class BpeModel {
 public:
  static BpeModel from_json(const json& model, const std::string& path, const JsonCtx& ctx);

  // Appends the ids of one pre-tokenized word.
  void tokenize(std::string_view word, std::vector<int32_t>& out) const;

  std::optional<int32_t> token_to_id(std::string_view token) const;
  const std::string* id_to_token(int32_t id) const;  // nullptr when unknown
  int64_t max_id() const { return static_cast<int64_t>(id_to_token_.size()) - 1; }

 private:
  StringIdMap vocab_;
  std::vector<std::string> id_to_token_;
  std::vector<bool> has_id_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>>
      merges_;  // (left<<32|right) -> (rank, merged id)
  std::optional<int32_t> unk_id_;
  bool byte_fallback_ = false, fuse_unk_ = false, ignore_merges_ = false;
  std::string prefix_, suffix_;          // continuing_subword_prefix, end_of_word_suffix
  std::array<int32_t, 256> byte_ids_{};  // <0xXX> token ids, -1 when absent
};

}  // namespace sy
