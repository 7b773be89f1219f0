// The attention half of a transformer layer, one function for inference and training:
//   x += o(attention(rope(qk_norm(q(n), k(n)), v(n)))),  n = rmsnorm(x)
// with the families' variants (q/k/v/o biases, per-head or full-width q/k norms, OLMoE's
// clip_qkv, grouped-query heads). Inference appends keys and values to each sequence's KV cache
// and attends against it; training passes whole sequences without caches and a record, which
// keeps what the backward pass reads.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/mla_attention.h"
#include "ops/weight.h"

namespace sy::model {

// Views of one layer's attention weights (checkpoint data, or training's float32 parameters).
struct AttentionWeights {
  const float* norm = nullptr;  // [H] input RMSNorm
  ops::WeightView q, k, v, o;   // q [qw, H], k / v [kvw, H], o [H, qw]
  const float *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  const float *q_norm = nullptr, *k_norm = nullptr;  // [hd] per head or [width] full width
  const MlaWeights* mla = nullptr;   // MLA layers: everything but norm, o and o_bias
  const float* sinks = nullptr;      // [num_heads] GPT-OSS's attention sinks, or null
  const float* norm_bias = nullptr;  // [H] LayerNorm models (Phi-3.5-MoE): the input norm's bias
};

// What one call keeps for backward (training). Sizes follow the call.
struct AttentionRecord {
  std::vector<float> x_in, normed, rstd;  // the input x [T, H], rmsnorm(x), its 1/rms [T]
  std::vector<float> q_raw, k_raw;        // projections before the q/k norm (when present)
  std::vector<float> rstd_q, rstd_k;      // their 1/rms per norm row
  std::vector<float> q_unclipped, k_unclipped, v_unclipped;  // before clip_qkv (when set)
  std::vector<float> q, k, v;  // as attended: normed, clipped, rotated
  std::vector<float> probs;    // [B, nh, S, S]
  std::vector<float> attn;     // [T, qw] attention output before o
};

// Buffers reused across calls (inference).
struct AttentionScratch {
  std::vector<float> normed, q, k, v, attn, proj;
  std::vector<float> ones;  // [head_dim] the weight of Llama 4's unweighted q / k norm
  MlaScratch mla;
};

// x [T, H] += attention block(x). rope_cos / rope_sin: [T, head_dim / 2], each row's position.
// Without a record: chunks are the sequences' new tokens; their keys and values are appended
// to chunk.cache for `layer` (the caller advances the caches after the last layer). With a
// record: chunks are whole sequences of equal length without caches (cache == nullptr).
void attention_block(const ModelConfig& config, const AttentionWeights& w, int layer,
                     std::span<const SequenceChunk> chunks, int64_t num_tokens,
                     const float* rope_cos, const float* rope_sin, float* x,
                     AttentionScratch& scratch, AttentionRecord* record = nullptr);

}  // namespace sy::model
