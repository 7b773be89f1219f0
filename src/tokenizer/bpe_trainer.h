// Trains a BPE tokenizer on a text corpus and writes a standard Hugging Face tokenizer.json
// in one of two styles: GPT-2 byte-level (Qwen2 / Llama-3 / DeepSeek-like regex splits) or
// SentencePiece-like with byte fallback (Llama / Mixtral). Deterministic for a given input.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy {

enum class BpeStyle {
  ByteLevel,      // 256 byte symbols, regex pre-tokenizer, ByteLevel decoder
  SentencePiece,  // Prepend("▁") + Replace(" ", "▁"), byte_fallback, <unk>/<s>/</s> = 0/1/2, BOS
                  // template
};

// Pre-tokenizer of the ByteLevel style.
enum class SplitPreset {
  Qwen2,     // Split(Qwen2 regex, single digits) + ByteLevel(use_regex = false)
  Llama3,    // Split(Llama-3 regex, digits in groups of up to 3) + ByteLevel(use_regex = false)
  Gpt2,      // ByteLevel(use_regex = true): GPT-2's built-in regex
  DeepSeek,  // Sequence[Digits(individual), Split(CJK runs), Split(DeepSeek regex),
             // ByteLevel(use_regex = false)]
};

struct BpeTrainOptions {
  int64_t vocab_size = 4096;  // total ids, special tokens included
  BpeStyle style = BpeStyle::ByteLevel;
  SplitPreset preset = SplitPreset::Qwen2;  // ByteLevel style only
  std::string split_regex;  // ByteLevel style: replaces the preset's main Split regex if set
  std::vector<std::string>
      special_tokens;         // e.g. "<|endoftext|>"; appended after the learned vocab
  int64_t min_frequency = 2;  // pairs seen fewer times are never merged
};

// Returns the tokenizer.json text. Throws sy::Error for invalid options or non-UTF-8 corpus.
std::string train_bpe_tokenizer_json(std::string_view corpus, const BpeTrainOptions& options);

}  // namespace sy
