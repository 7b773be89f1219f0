// A small tokenizer.json for synthetic checkpoints, trained by Switchyard's BPE trainer on
// a built-in multilingual text, in the style of the family it accompanies.
#pragma once

#include <cstdint>
#include <string>

namespace sy::synth {

struct TinyTokenizer {
  std::string json;
  int32_t bos_id = -1;
  int32_t eos_id = -1;
  int64_t vocab_size = 0;  // ids used, special tokens included
};

// style: "byte_level" (Qwen / OLMoE / DeepSeek) or "sentencepiece" (Llama / Mixtral).
// max_vocab_size bounds the ids; the built-in text may support fewer merges.
TinyTokenizer make_tiny_tokenizer(const std::string& style, int64_t max_vocab_size);

}  // namespace sy::synth
