// Causal self-attention over B sequences of S tokens (rows t = b*S + s), grouped-query heads,
// softmax(q k^T / sqrt(hd)) v, with the probabilities saved for the backward pass.
#pragma once

#include <cstdint>

namespace sy::train {

struct AttentionDims {
  int64_t batch = 0, seq = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  int64_t q_width() const { return num_heads * head_dim; }
  int64_t kv_width() const { return num_kv_heads * head_dim; }
  int64_t prob_size() const { return batch * num_heads * seq * seq; }
};

// q [T, qw], k / v [T, kvw] -> out [T, qw]; probs [B, nh, S, S]: row s holds keys 0..s, the
// rest of the row is scratch (read by nothing).
void attention_forward(const AttentionDims& d, const float* q, const float* k, const float* v,
                       float* out, float* probs);

// d_out [T, qw] -> dq [T, qw], dk / dv [T, kvw] (all overwritten).
void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                        const float* probs, const float* d_out, float* dq, float* dk, float* dv);

}  // namespace sy::train
