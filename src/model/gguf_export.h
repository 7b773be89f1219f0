// Writes a Hugging Face checkpoint of a supported family as a GGUF file the way llama.cpp's
// converter lays it out (formats.md section 2-3): architecture metadata, stacked experts
// (ffn_{gate,up,down}_exps), F32 norms and routers, q / k rows permuted for the `llama`
// architecture, the tokenizer's vocabulary and merges, and the weight matrices in the chosen
// type. The inverse of model/gguf_checkpoint.h.
#pragma once

#include <cstdint>
#include <string>

#include "util/ggml_types.h"

namespace sy::model {

struct GgufExportSummary {
  int64_t tensors = 0, quantized = 0;  // all tensors; those stored in the chosen type
  uint64_t bytes = 0;                  // of the file
  std::string vocab_note;  // why no tokenizer.ggml.* vocabulary was written; empty when it was
};

// `type`: F32, F16, BF16, Q8_0 or Q4_0. Matrices whose rows are not a multiple of the type's
// block stay F16 (F32 for F32). Written atomically: never a half-written file.
GgufExportSummary export_gguf(const std::string& model_dir, const std::string& out_path,
                              GgmlType type);

// "Q8_0" -> GgmlType::Q8_0, for the types export_gguf writes; sy::Error naming the choices.
GgmlType parse_gguf_export_type(const std::string& name);

}  // namespace sy::model
