// Causal grouped-query attention of n new query rows against a sequence's KV cache.
#pragma once

#include <cmath>
#include <cstdint>

namespace sy::model {

struct AttentionShape {
  int64_t num_heads, num_kv_heads, head_dim;
  float scale;         // on q k^T: 1 / sqrt(head_dim) in most families
  int64_t window = 0;  // sliding window: a query sees its last `window` positions (0: all)
  int64_t chunk = 0;   // chunked attention: a query sees its own chunk of `chunk` positions
  const float* sinks = nullptr;  // [num_heads] GPT-OSS: a learned logit per head that joins
                                 // each row's softmax and takes its share of the mass
};

// q:   [n, num_heads * head_dim], the queries of positions pos0 .. pos0 + n - 1
// k/v: [pos0 + n, num_kv_heads * head_dim], cached rows including the new ones
// out: [n, num_heads * head_dim]
// Softmax(scale q k^T) v with a causal mask, float32 throughout.
void causal_attention(const AttentionShape& shape, const float* q, int64_t n, int64_t pos0,
                      const float* k, const float* v, float* out);

// B whole sequences of S tokens each (rows t = b*S + s, positions 0 .. S-1), no cache.
struct AttentionDims {
  int64_t batch = 0, seq = 0;
  int64_t num_heads = 0, num_kv_heads = 0, head_dim = 0;
  float scale = 0;  // on q k^T; 0: 1 / sqrt(head_dim)
  float score_scale() const { return scale != 0 ? scale : 1.0f / std::sqrt(float(head_dim)); }
  int64_t q_width() const { return num_heads * head_dim; }
  int64_t kv_width() const { return num_kv_heads * head_dim; }
  int64_t prob_size() const { return batch * num_heads * seq * seq; }
};

// Causal grouped-query attention over whole sequences, softmax(q k^T / sqrt(hd)) v, keeping the
// probabilities (training's forward; its backward reads them).
// q [T, qw], k / v [T, kvw] -> out [T, qw]; probs [B, nh, S, S]: row s holds keys 0..s, the
// rest of the row is scratch (read by nothing). (Sequence, kv head) groups run concurrently,
// each with single-threaded products, so results do not depend on the thread count; query
// rows go in blocks of 64 whose products skip most of the masked upper triangle.
void batched_causal_attention(const AttentionDims& d, const float* q, const float* k,
                              const float* v, float* out, float* probs);

// Rotary tables for one position: cos/sin of pos * inv_freq[i], i < rot_dim / 2, computed
// in float32 the way the Hugging Face reference does.
void rope_tables(int64_t pos, int64_t rot_dim, float theta, float* cos_out, float* sin_out);

}  // namespace sy::model
