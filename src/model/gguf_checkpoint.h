// A GGUF model file read as a Hugging Face checkpoint: its metadata becomes the family's
// config.json keys and its tensors the family's tensor names, so everything that runs a
// safetensors checkpoint runs a GGUF one. Architectures as llama.cpp writes them
// (formats.md section 2-3): `llama` with experts (Mixtral), `qwen2moe`, `qwen3moe`, `olmoe`.
// - Stacked experts (ffn_{gate,up,down}_exps, dims {in, out, E}) are split into per-expert
//   tensors; the fused ffn_gate_up_exps too (gate rows first).
// - The `llama` architecture's q / k rows were permuted by the converter for ggml's
//   adjacent-pair RoPE; they are permuted back for the rotate-half RoPE the HF layout uses.
// - F32, F16, BF16, Q8_0 and Q4_0 tensors stay in the mapping (the kernels read Q8_0 / Q4_0
//   blocks directly; experts can be offloaded from the file); Q4_K, Q6_K and MXFP4 tensors are
//   dequantized to F32 at load.
#pragma once

#include <string>

#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"

namespace sy::model {

// A regular file whose name ends in ".gguf".
bool is_gguf_file(const std::string& path);

// The config.json text (Hugging Face keys of the matching family). sy::Error naming the
// architecture or key for anything not supported.
std::string gguf_config_json(const io::GgufFile& file);

// Every tensor under the family's Hugging Face name and shape (config `c` from
// gguf_config_json). sy::Error for a tensor with no mapping or a type Switchyard cannot read.
io::TensorStore gguf_tensor_store(const std::string& path, const ModelConfig& c);

}  // namespace sy::model
