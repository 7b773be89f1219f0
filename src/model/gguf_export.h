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

// What the weight matrices are stored as: one ggml type, or one of llama.cpp's mixes:
//  - Q4_K_M: Q4_K, with Q6_K for output.weight and for attn_v / ffn_down in the layers
//    llama.cpp gives more bits;
//  - MXFP4_MOE (GPT-OSS's published layout): the stacked experts in MXFP4, the rest in Q8_0.
struct GgufExportType {
  enum class Mix { kNone, kQ4KM, kMxfp4Moe };
  std::string name;  // as given: "Q4_K_M"
  GgmlType base = GgmlType::Q8_0;
  Mix mix = Mix::kNone;
  uint32_t file_type = 7;  // general.file_type (llama.cpp's LLAMA_FTYPE_MOSTLY_*)
};

// Matrices whose rows are not a multiple of the type's block fall back to Q8_0, then F16 (F32
// stays F32). Written atomically (never a half-written file) and streamed: one tensor is
// converted and held in memory at a time.
GgufExportSummary export_gguf(const std::string& model_dir, const std::string& out_path,
                              const GgufExportType& type);

// "Q8_0", "Q4_K_M", ... for the types export_gguf writes; sy::Error naming the choices.
GgufExportType parse_gguf_export_type(const std::string& name);

}  // namespace sy::model
