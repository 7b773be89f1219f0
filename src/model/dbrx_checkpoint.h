// DBRX checkpoints (DbrxForCausalLM) read under the tensor names every other family uses, so
// that the loader, `inspect` and expert parallelism need no DBRX branch. DBRX stores
//   transformer.wte / transformer.norm_f / lm_head,
//   transformer.blocks.L.norm_attn_norm.{norm_1, norm_2, attn.Wqkv, attn.out_proj},
//   transformer.blocks.L.ffn.router.layer and ffn.experts.mlp.{w1, v1, w2}, each [E * I, H].
// Wqkv's q / k / v rows, and w1 / v1's expert slices, are views of the mapped file; w2's
// expert slices hold down_proj transposed (DBRX computes h @ w2_e), so they are copied once,
// transposed, in their stored dtype.
#pragma once

#include <string>

#include "io/safetensors.h"
#include "model/config.h"

namespace sy::model {

// sy::Error naming the tensor when one is missing or has the wrong shape or dtype.
io::TensorStore dbrx_tensor_store(const std::string& model_dir, const ModelConfig& config);

}  // namespace sy::model
