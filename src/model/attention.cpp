#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/elementwise.h"
#include "ops/gemm.h"

namespace sy::model {

namespace {
constexpr int64_t kQueryBlock = 64;

// Softmax over x[0, n) and, when given, one more logit that takes its share of the mass and
// is then dropped (an attention sink).
void softmax_with_sink(float* x, int64_t n, const float* sink) {
  float mx = sink ? *sink : x[0];
  for (int64_t i = 0; i < n; ++i) mx = std::max(mx, x[i]);
  float sum = sink ? std::exp(*sink - mx) : 0.0f;
  for (int64_t i = 0; i < n; ++i) sum += (x[i] = std::exp(x[i] - mx));
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) x[i] *= inv;
}
}  // namespace

// Per (kv head, block of up to 64 query rows): scores = scale Q K^T over the keys the block's
// rows see, the causal mask applied row by row, softmax, then P V -- two matrix products
// per head instead of a dot per (query, head, key). The masked keys past the block's last row
// are never multiplied, nor those before its first row's sliding window or chunk. A decode step (n
// = 1) takes the same path, so a token's logits do not depend on how many tokens its forward call
// verified (speculative decoding).
void causal_attention(const AttentionShape& s, const float* q, int64_t n, int64_t pos0,
                      const float* k, const float* v, float* out) {
  const int64_t hd = s.head_dim, qw = s.num_heads * hd, kvw = s.num_kv_heads * hd;
  const int64_t group = s.num_heads / s.num_kv_heads;
  const float scale = s.scale;
  const int64_t blocks = (n + kQueryBlock - 1) / kQueryBlock;
  const int64_t tasks = s.num_heads * blocks;
#pragma omp parallel
  {
    std::vector<float> P;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; ++task) {
      const int64_t h = task / blocks, r0 = (task % blocks) * kQueryBlock;
      const int64_t r1 = std::min(n, r0 + kQueryBlock), m = r1 - r0;
      // The first key a query of sequence length len sees: its window's or chunk's start
      // (nondecreasing in len, so the block's first row has the smallest).
      auto first_key = [&](int64_t len) {
        int64_t first = s.window > 0 ? std::max<int64_t>(0, len - s.window) : 0;
        if (s.chunk > 0) first = std::max(first, (len - 1) / s.chunk * s.chunk);
        return first;
      };
      const int64_t k0 = first_key(pos0 + r0 + 1);
      const int64_t keys = pos0 + r1 - k0;  // keys k0 .. pos0 + r1 - 1
      const int64_t kv_off = (h / group) * hd + k0 * kvw;
      P.resize(size_t(m * keys));
      ops::sgemm(ops::Trans::kNo, ops::Trans::kYes, m, keys, hd, scale, q + r0 * qw + h * hd, qw,
                 k + kv_off, kvw, 0.0f, P.data(), keys);
      for (int64_t i = 0; i < m; ++i) {
        float* row = P.data() + i * keys;
        const int64_t len = pos0 + r0 + i + 1, first = first_key(len);
        if (first == 0 && !s.sinks) {
          ops::softmax(row, len);
        } else {
          std::fill(row, row + (first - k0), 0.0f);
          softmax_with_sink(row + (first - k0), len - first, s.sinks ? &s.sinks[h] : nullptr);
        }
        std::fill(row + (len - k0), row + keys, 0.0f);
      }
      ops::sgemm(ops::Trans::kNo, ops::Trans::kNo, m, hd, keys, 1.0f, P.data(), keys, v + kv_off,
                 kvw, 0.0f, out + r0 * qw + h * hd, qw);
    }
  }
}

void batched_causal_attention(const AttentionDims& d, const float* q, const float* k,
                              const float* v, float* out, float* probs) {
  const int64_t S = d.seq, hd = d.head_dim, qw = d.q_width(), kvw = d.kv_width();
  const int64_t group = d.num_heads / d.num_kv_heads;
  const float scale = d.score_scale();
  const int64_t num_tasks = d.batch * d.num_kv_heads;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t task = 0; task < num_tasks; ++task) {
    const int64_t b = task / d.num_kv_heads, kh = task % d.num_kv_heads;
    const float* kb = k + b * S * kvw + kh * hd;
    const float* vb = v + b * S * kvw + kh * hd;
    for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
      const float* qb = q + b * S * qw + h * hd;
      float* ob = out + b * S * qw + h * hd;
      float* P = probs + (b * d.num_heads + h) * S * S;
      for (int64_t r0 = 0; r0 < S; r0 += kQueryBlock) {
        const int64_t r1 = std::min(S, r0 + kQueryBlock), m = r1 - r0;
        // P[r0:r1, 0:r1] = scale Q[r0:r1] K[0:r1]^T
        ops::sgemm(ops::Trans::kNo, ops::Trans::kYes, int(m), int(r1), int(hd), scale, qb + r0 * qw,
                   int(qw), kb, int(kvw), 0.0f, P + r0 * S, int(S));
        for (int64_t i = r0; i < r1; ++i) {
          float* row = P + i * S;
          ops::softmax(row, i + 1);
          std::fill(row + i + 1, row + r1, 0.0f);
        }
        // out[r0:r1] = P[r0:r1, 0:r1] V[0:r1]
        ops::sgemm(ops::Trans::kNo, ops::Trans::kNo, int(m), int(hd), int(r1), 1.0f, P + r0 * S,
                   int(S), vb, int(kvw), 0.0f, ob + r0 * qw, int(qw));
      }
    }
  }
}

void rope_tables(int64_t pos, int64_t rot_dim, float theta, float* cos_out, float* sin_out) {
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    // inv_freq = 1 / theta ** (arange(0, dim, 2) / dim), float32 as in the reference.
    const float exponent = float(2 * i) / float(rot_dim);
    const float inv_freq = 1.0f / std::pow(theta, exponent);
    const float angle = float(pos) * inv_freq;
    cos_out[i] = std::cos(angle);
    sin_out[i] = std::sin(angle);
  }
}

}  // namespace sy::model
