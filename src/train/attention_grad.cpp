#include "train/attention_grad.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include <cblas.h>

#include "ops/elementwise.h"

namespace sy::train {

// One (sequence, head) pair at a time: the products are S x S x hd sgemm calls (OpenBLAS
// threads them), the full square is computed and the causal triangle masked, which costs 2x
// the FLOPs of a triangular product but runs at sgemm speed. Row-wise softmax work is
// spread over OpenMP threads.
namespace {

constexpr auto kRow = CblasRowMajor;
constexpr auto kN = CblasNoTrans;
constexpr auto kT = CblasTrans;

}  // namespace

void attention_forward(const AttentionDims& d, const float* q, const float* k, const float* v,
                       float* out, float* probs) {
  const int64_t S = d.seq, hd = d.head_dim, qw = d.q_width(), kvw = d.kv_width();
  const int64_t group = d.num_heads / d.num_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.num_heads; ++h) {
      const float* qb = q + b * S * qw + h * hd;
      const float* kb = k + b * S * kvw + (h / group) * hd;
      const float* vb = v + b * S * kvw + (h / group) * hd;
      float* P = probs + (b * d.num_heads + h) * S * S;
      cblas_sgemm(kRow, kN, kT, int(S), int(S), int(hd), scale, qb, int(qw), kb, int(kvw), 0.0f,
                  P, int(S));
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < S; ++i) {
        float* row = P + i * S;
        ops::softmax(row, i + 1);
        std::fill(row + i + 1, row + S, 0.0f);
      }
      cblas_sgemm(kRow, kN, kN, int(S), int(hd), int(S), 1.0f, P, int(S), vb, int(kvw), 0.0f,
                  out + b * S * qw + h * hd, int(qw));
    }
}

void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                        const float* probs, const float* d_out, float* dq, float* dk, float* dv) {
  const int64_t S = d.seq, hd = d.head_dim, qw = d.q_width(), kvw = d.kv_width();
  const int64_t group = d.num_heads / d.num_kv_heads;
  const float scale = 1.0f / std::sqrt(float(hd));
  std::fill(dk, dk + d.batch * S * kvw, 0.0f);
  std::fill(dv, dv + d.batch * S * kvw, 0.0f);
  std::vector<float> dS(size_t(S * S));
  for (int64_t b = 0; b < d.batch; ++b)
    for (int64_t h = 0; h < d.num_heads; ++h) {
      const int64_t kh = h / group;
      const float* qb = q + b * S * qw + h * hd;
      const float* kb = k + b * S * kvw + kh * hd;
      const float* vb = v + b * S * kvw + kh * hd;
      const float* dob = d_out + b * S * qw + h * hd;
      float* dqb = dq + b * S * qw + h * hd;
      float* dkb = dk + b * S * kvw + kh * hd;
      float* dvb = dv + b * S * kvw + kh * hd;
      const float* P = probs + (b * d.num_heads + h) * S * S;
      // dV += P^T dO ; dP = dO V^T
      cblas_sgemm(kRow, kT, kN, int(S), int(hd), int(S), 1.0f, P, int(S), dob, int(qw), 1.0f, dvb,
                  int(kvw));
      cblas_sgemm(kRow, kN, kT, int(S), int(S), int(hd), 1.0f, dob, int(qw), vb, int(kvw), 0.0f,
                  dS.data(), int(S));
      // dS = P * (dP - sum_j P dP) * scale (zero above the diagonal, where P is zero)
#pragma omp parallel for schedule(static)
      for (int64_t i = 0; i < S; ++i) {
        float* ds = dS.data() + i * S;
        const float* pr = P + i * S;
        const float dot = ops::dot(pr, ds, i + 1);
        for (int64_t j = 0; j <= i; ++j) ds[j] = pr[j] * (ds[j] - dot) * scale;
        std::fill(ds + i + 1, ds + S, 0.0f);
      }
      // dQ = dS K ; dK += dS^T Q
      cblas_sgemm(kRow, kN, kN, int(S), int(hd), int(S), 1.0f, dS.data(), int(S), kb, int(kvw),
                  0.0f, dqb, int(qw));
      cblas_sgemm(kRow, kT, kN, int(S), int(hd), int(S), 1.0f, dS.data(), int(S), qb, int(qw),
                  1.0f, dkb, int(kvw));
    }
}

}  // namespace sy::train
