#include "train/attention_grad.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <cblas.h>

namespace sy::train {

// Each (sequence, head) pair is independent; the products are small (S x S x hd), so the
// pairs run in parallel with single-threaded loops rather than threaded BLAS calls.
namespace {

// y[m, n] (+)= alpha * a[m, k] b[n, k]^T with row strides.
void gemm_nt(int64_t m, int64_t n, int64_t k, float alpha, const float* a, int64_t lda,
             const float* b, int64_t ldb, float beta, float* y, int64_t ldy) {
  for (int64_t i = 0; i < m; ++i) {
    float* yr = y + i * ldy;
    const float* ar = a + i * lda;
    for (int64_t j = 0; j < n; ++j) {
      const float* br = b + j * ldb;
      float s = 0;
      for (int64_t p = 0; p < k; ++p) s += ar[p] * br[p];
      yr[j] = alpha * s + (beta == 0 ? 0.0f : beta * yr[j]);
    }
  }
}

// y[m, n] (+)= a[m, k] b[k, n]; rows of a shorter than k may be given by `a_len(i)`.
template <class Len>
void gemm_nn(int64_t m, int64_t n, const float* a, int64_t lda, const float* b, int64_t ldb,
             bool accumulate, float* y, int64_t ldy, Len a_len) {
  for (int64_t i = 0; i < m; ++i) {
    float* yr = y + i * ldy;
    if (!accumulate) std::fill(yr, yr + n, 0.0f);
    const float* ar = a + i * lda;
    const int64_t kk = a_len(i);
    for (int64_t p = 0; p < kk; ++p) {
      const float s = ar[p];
      const float* br = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) yr[j] += s * br[j];
    }
  }
}

// y[m, n] (+)= a[k, m]^T b[k, n] (column i of a), a's column i nonzero only from row i on.
void gemm_tn_causal(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
                    int64_t ldb, float* y, int64_t ldy) {
  for (int64_t p = 0; p < k; ++p) {
    const float* ar = a + p * lda;
    const float* br = b + p * ldb;
    for (int64_t i = 0; i <= std::min(p, m - 1); ++i) {
      const float s = ar[i];
      float* yr = y + i * ldy;
      for (int64_t j = 0; j < n; ++j) yr[j] += s * br[j];
    }
  }
}

}  // namespace

void attention_forward(const AttentionDims& d, const float* q, const float* k, const float* v,
                       float* out, float* probs) {
  const int64_t S = d.seq, hd = d.head_dim, qw = d.q_width(), kvw = d.kv_width();
  const int64_t group = d.num_heads / d.num_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));
#pragma omp parallel for schedule(dynamic, 1) collapse(2)
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.num_heads; ++h) {
      const float* qb = q + b * S * qw + h * hd;
      const float* kb = k + b * S * kvw + (h / group) * hd;
      const float* vb = v + b * S * kvw + (h / group) * hd;
      float* P = probs + (b * d.num_heads + h) * S * S;
      for (int64_t i = 0; i < S; ++i) {
        float* row = P + i * S;
        gemm_nt(1, i + 1, hd, scale, qb + i * qw, qw, kb, kvw, 0.0f, row, S);
        const float mx = *std::max_element(row, row + i + 1);
        float sum = 0;
        for (int64_t j = 0; j <= i; ++j) sum += (row[j] = std::exp(row[j] - mx));
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j <= i; ++j) row[j] *= inv;
        std::fill(row + i + 1, row + S, 0.0f);
      }
      gemm_nn(S, hd, P, S, vb, kvw, false, out + b * S * qw + h * hd, qw,
              [](int64_t i) { return i + 1; });
    }
}

void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                        const float* probs, const float* d_out, float* dq, float* dk, float* dv) {
  const int64_t S = d.seq, hd = d.head_dim, qw = d.q_width(), kvw = d.kv_width();
  const int64_t group = d.num_heads / d.num_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));
  std::fill(dk, dk + d.batch * S * kvw, 0.0f);
  std::fill(dv, dv + d.batch * S * kvw, 0.0f);
  // Heads sharing a kv head write the same dk / dv rows: parallelise over (batch, kv head)
  // and loop over the query heads of the group inside.
#pragma omp parallel
  {
    std::vector<float> dS(size_t(S * S));
#pragma omp for schedule(dynamic, 1) collapse(2)
    for (int64_t b = 0; b < d.batch; ++b)
      for (int64_t kh = 0; kh < d.num_kv_heads; ++kh)
        for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
          const float* qb = q + b * S * qw + h * hd;
          const float* kb = k + b * S * kvw + kh * hd;
          const float* vb = v + b * S * kvw + kh * hd;
          const float* dob = d_out + b * S * qw + h * hd;
          float* dqb = dq + b * S * qw + h * hd;
          float* dkb = dk + b * S * kvw + kh * hd;
          float* dvb = dv + b * S * kvw + kh * hd;
          const float* P = probs + (b * d.num_heads + h) * S * S;
          // dV += P^T dO
          gemm_tn_causal(S, hd, S, P, S, dob, qw, dvb, kvw);
          // dP = dO V^T (causal part), dS = P * (dP - sum_j P dP)
          for (int64_t i = 0; i < S; ++i) {
            float* ds = dS.data() + i * S;
            gemm_nt(1, i + 1, hd, 1.0f, dob + i * qw, qw, vb, kvw, 0.0f, ds, S);
            const float* pr = P + i * S;
            float dot = 0;
            for (int64_t j = 0; j <= i; ++j) dot += pr[j] * ds[j];
            for (int64_t j = 0; j <= i; ++j) ds[j] = pr[j] * (ds[j] - dot) * scale;
          }
          // dQ = dS K ; dK += dS^T Q
          gemm_nn(S, hd, dS.data(), S, kb, kvw, false, dqb, qw, [](int64_t i) { return i + 1; });
          gemm_tn_causal(S, hd, S, dS.data(), S, qb, qw, dkb, kvw);
        }
  }
}

}  // namespace sy::train
