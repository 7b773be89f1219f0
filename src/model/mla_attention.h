// Multi-head latent attention (DeepSeek-V2/V3; config.h MlaConfig), inference:
//   c = RMSNorm(x W_DKV[:kvr]),  k_rope = rope(x W_DKV[kvr:])     (cached: kvr + rope floats)
//   q = x W_Q  or  RMSNorm(x W_DQ) W_UQ,  per head [q_nope | rope(q_rope)]
//   head h: scores = scale (q_nope W_UK_h . c + rope(q_rope) . k_rope),  out = (P c) W_UV_h^T
// The cache holds only the latent and the rotary key, never the expanded heads (the memory win
// MLA exists for), and attention runs on it in absorbed form: W_UK_h moves onto the query and
// W_UV_h after the weighted sum, so no step expands the cached positions.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "ops/weight.h"

namespace sy::model {

// One layer's MLA weights (views into the checkpoint; kv_b also as float32 for the absorbed
// products).
struct MlaWeights {
  ops::WeightView q_a, q_b;  // q-LoRA: q_a [q_lora_rank, H], q_b [nh * qk_head_dim, q_lora_rank]
  ops::WeightView q;         // without q-LoRA: [nh * qk_head_dim, H]
  ops::WeightView kv_a;      // [kv_lora_rank + qk_rope_dim, H]
  ops::WeightView kv_b;      // [nh * (qk_nope_dim + v_head_dim), kv_lora_rank]
  std::vector<float> q_a_norm, kv_a_norm;  // [q_lora_rank], [kv_lora_rank]
  std::vector<float> q_a_bias, kv_a_bias;  // attention_bias (empty when absent)
  std::vector<float> kv_b_f32;             // kv_b widened when it is not stored as float32
  const float* kv_b_data() const {
    return kv_b_f32.empty() ? static_cast<const float*>(kv_b.data) : kv_b_f32.data();
  }
};

struct MlaScratch {
  std::vector<float> qa, q, kva;
};

// out [T, nh * v_head_dim]: attention of the chunks' new tokens (normed [T, H], after the
// layer's input RMSNorm) against their caches, whose latent rows for `layer` it appends.
// rope_cos / rope_sin: [T, qk_rope_dim / 2].
void mla_attention(const ModelConfig& config, const MlaWeights& w, int layer,
                   std::span<const SequenceChunk> chunks, int64_t num_tokens, const float* normed,
                   const float* rope_cos, const float* rope_sin, float* out, MlaScratch& scratch);

}  // namespace sy::model
