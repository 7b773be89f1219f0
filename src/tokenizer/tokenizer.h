// Hugging Face tokenizer.json: byte-level BPE (GPT-2 / Qwen / OLMoE / DeepSeek style, with a
// regex pre-tokenizer) and SentencePiece-style BPE with byte fallback (Llama / Mixtral style),
// with special and added tokens. Encode/decode agree with Hugging Face's implementation.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace sy {

class Tokenizer {
 public:
  // Parses a tokenizer.json; throws sy::Error naming the file and the offending field.
  static Tokenizer from_file(const std::string& path);
  static Tokenizer from_json_string(std::string_view json, const std::string& origin);

  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // add_special_tokens applies the post-processor (e.g. a leading BOS), as HF's encode does.
  std::vector<int32_t> encode(std::string_view text, bool add_special_tokens = true) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special_tokens = false) const;

  int64_t vocab_size() const;  // largest id + 1, added tokens included
  std::optional<int32_t> token_to_id(std::string_view token) const;
  std::string id_to_token(int32_t id) const;
  bool is_special(int32_t id) const;

  struct Impl;

 private:
  explicit Tokenizer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Streams text for generated ids: push() returns the newly completed text (never a split
// UTF-8 sequence), so printing each result in turn prints decode(all ids).
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& tokenizer) : tokenizer_(tokenizer) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is left (may be an incomplete sequence at the end)

 private:
  const Tokenizer& tokenizer_;
  std::vector<int32_t> ids_;  // a sliding window of the pushed ids
  std::string prefix_;        // decode() of ids_[0, prefix_index_): text already returned
  size_t prefix_index_ = 0;
};

}  // namespace sy
