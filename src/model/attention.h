// Causal grouped-query attention of n new query rows against a sequence's KV cache.
#pragma once

#include <cstdint>

namespace sy::model {

struct AttentionShape {
  int64_t num_heads, num_kv_heads, head_dim;
};

// q:   [n, num_heads * head_dim], the queries of positions pos0 .. pos0 + n - 1
// k/v: [pos0 + n, num_kv_heads * head_dim], cached rows including the new ones
// out: [n, num_heads * head_dim]
// Softmax(q k^T / sqrt(head_dim)) v with a causal mask, float32 throughout.
void causal_attention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos0,
                      const float* k, const float* v, float* out);

// Rotary tables for one position: cos/sin of pos * inv_freq[i], i < rot_dim / 2, computed
// in float32 the way the Hugging Face reference does.
void rope_tables(int64_t pos, int64_t rot_dim, float theta, float* cos_out, float* sin_out);

}  // namespace sy::model
