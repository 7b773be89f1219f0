// llama.cpp's tokenizer metadata (GGUF `tokenizer.ggml.*`) to and from a Hugging Face
// tokenizer.json, so a GGUF made by llama.cpp's converter tokenizes in Switchyard and a GGUF
// written by `switchyard quantize` tokenizes in llama.cpp.
//   "gpt2":  byte-level BPE: tokens, merges ("a b") and a pre-tokenizer type naming the split
//            regex ("qwen2", "llama-bpe", "gpt-2", ...).
//   "llama": SentencePiece BPE with byte fallback: tokens and scores; pieces merge highest score
//            first, which is BPE with merges ranked by the merged piece's score.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy {

// llama.cpp's token types (llama_token_type).
enum class GgmlTokenType : int32_t {
  kNormal = 1,
  kUnknown = 2,
  kControl = 3,
  kUserDefined = 4,
  kUnused = 5,
  kByte = 6,
};

struct GgmlVocab {
  std::string model;  // "gpt2" or "llama"
  std::string pre;    // gpt2: the pre-tokenizer type
  std::vector<std::string> tokens;
  std::vector<float> scores;         // llama: one per token
  std::vector<int32_t> token_types;  // GgmlTokenType, one per token (absent: all normal)
  std::vector<std::string> merges;   // gpt2: "left right", highest priority first
  int32_t bos = -1, eos = -1, unk = -1, pad = -1;
  bool add_bos = false;
  bool add_eos = false;
  bool add_space_prefix = true;  // llama: a "▁" before the text
};

// The pre-tokenizer types this reader maps to a split regex.
std::vector<std::string> supported_ggml_pre_types();

// A tokenizer.json equivalent to `v`. Throws sy::Error naming what cannot be expressed
// (an unknown model or pre-tokenizer type, lengths that disagree, a merge of unknown tokens).
std::string tokenizer_json_from_ggml(const GgmlVocab& v);

// The GGUF vocabulary of a tokenizer.json (what llama.cpp's convert_hf_to_gguf.py writes for
// it). bos / eos come from config.json (-1: none). Like the converter, the token list is padded
// with "[PAD<id>]" tokens up to `vocab_size` (config.json's, the embedding's rows), since
// llama.cpp sizes the embedding by the token count. Throws sy::Error when the tokenizer's
// pipeline has no llama.cpp equivalent or holds more tokens than `vocab_size`.
GgmlVocab ggml_vocab_from_tokenizer_json(const std::string& json_text, int32_t bos, int32_t eos,
                                         int64_t vocab_size = 0);

}  // namespace sy
