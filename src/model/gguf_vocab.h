// The tokenizer of a GGUF file, both ways: read (the whole Hugging Face tokenizer.json when the
// file carries it under tokenizer.huggingface.json, else llama.cpp's tokenizer.ggml.*
// vocabulary) and write (tokenizer.ggml.* from a tokenizer.json, as llama.cpp's converter).
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "io/gguf.h"

namespace sy::model {

// tokenizer.json text for the GGUF's tokenizer; nullopt when the file has none. Throws
// sy::Error (naming the key) when the vocabulary is malformed or of a kind not supported.
std::optional<std::string> gguf_tokenizer_json(const io::GgufFile& file);

// Writes tokenizer.ggml.{model,pre,tokens,token_type,merges|scores,bos/eos ids,add_bos_token}
// for `tokenizer_json`, padded to `vocab_size` tokens (the embedding's rows). Returns false (and
// writes nothing) when its pipeline has no llama.cpp equivalent; `why` then says what.
bool write_gguf_vocab(io::GgufWriter& out, const std::string& tokenizer_json, int32_t bos,
                      int32_t eos, int64_t vocab_size, std::string* why);

}  // namespace sy::model
