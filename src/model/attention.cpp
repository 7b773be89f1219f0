#include "model/attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

namespace sy::model {

void causal_attention(const AttentionShape& s, const float* q, int64_t n, int64_t pos0,
                      const float* k, const float* v, float* out) {
  const int64_t hd = s.head_dim, qw = s.num_heads * hd, kvw = s.num_kv_heads * hd;
  const int64_t group = s.num_heads / s.num_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel
  {
    std::vector<float> scores(size_t(pos0 + n));
#pragma omp for collapse(2) schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      for (int64_t h = 0; h < s.num_heads; ++h) {
        const int64_t len = pos0 + i + 1;  // causal: positions 0 .. pos0 + i
        const float* qh = q + i * qw + h * hd;
        const int64_t kv_off = (h / group) * hd;
        float max = -INFINITY;
        for (int64_t j = 0; j < len; ++j) {
          const float* kj = k + j * kvw + kv_off;
          float dot = 0;
#pragma omp simd reduction(+ : dot)
          for (int64_t d = 0; d < hd; ++d) dot += qh[d] * kj[d];
          scores[size_t(j)] = dot * scale;
          max = std::max(max, scores[size_t(j)]);
        }
        float sum = 0;
        for (int64_t j = 0; j < len; ++j)
          sum += (scores[size_t(j)] = std::exp(scores[size_t(j)] - max));
        const float inv = 1.0f / sum;
        float* oh = out + i * qw + h * hd;
        std::fill(oh, oh + hd, 0.0f);
        for (int64_t j = 0; j < len; ++j) {
          const float p = scores[size_t(j)] * inv;
          const float* vj = v + j * kvw + kv_off;
#pragma omp simd
          for (int64_t d = 0; d < hd; ++d) oh[d] += p * vj[d];
        }
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
