#include "train/attention_grad.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "ops/elementwise.h"
#include "ops/gemm.h"

namespace sy::train {

// The backward of model::batched_causal_attention, organised as it is: (sequence, kv head)
// groups run concurrently, each with single-threaded sgemm, and query rows go in blocks of
// kBlock that skip the masked upper triangle.
namespace {

constexpr auto kN = ops::Trans::kNo;
constexpr auto kT = ops::Trans::kYes;
constexpr int64_t kBlock = 64;

}  // namespace

void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                        const float* probs, const float* d_out, float* dq, float* dk, float* dv) {
  const int64_t S = d.seq, hd = d.head_dim, qw = d.q_width(), kvw = d.kv_width();
  const int64_t group = d.num_heads / d.num_kv_heads;
  const float scale = d.score_scale();
  const int64_t num_tasks = d.batch * d.num_kv_heads;
#pragma omp parallel
  {
    std::vector<float> dS(size_t(kBlock * S));
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < num_tasks; ++task) {
      const int64_t b = task / d.num_kv_heads, kh = task % d.num_kv_heads;
      const float* kb = k + b * S * kvw + kh * hd;
      const float* vb = v + b * S * kvw + kh * hd;
      float* dkb = dk + b * S * kvw + kh * hd;
      float* dvb = dv + b * S * kvw + kh * hd;
      for (int64_t s = 0; s < S; ++s) {
        std::fill(dkb + s * kvw, dkb + s * kvw + hd, 0.0f);
        std::fill(dvb + s * kvw, dvb + s * kvw + hd, 0.0f);
      }
      for (int64_t h = kh * group; h < (kh + 1) * group; ++h) {
        const float* qb = q + b * S * qw + h * hd;
        const float* dob = d_out + b * S * qw + h * hd;
        float* dqb = dq + b * S * qw + h * hd;
        const float* P = probs + (b * d.num_heads + h) * S * S;
        for (int64_t r0 = 0; r0 < S; r0 += kBlock) {
          const int64_t r1 = std::min(S, r0 + kBlock), m = r1 - r0;
          const float* Pb = P + r0 * S;
          // dV[0:r1] += P[r0:r1, 0:r1]^T dO[r0:r1] ; dP = dO[r0:r1] V[0:r1]^T
          ops::sgemm(kT, kN, int(r1), int(hd), int(m), 1.0f, Pb, int(S), dob + r0 * qw, int(qw),
                     1.0f, dvb, int(kvw));
          ops::sgemm(kN, kT, int(m), int(r1), int(hd), 1.0f, dob + r0 * qw, int(qw), vb, int(kvw),
                     0.0f, dS.data(), int(S));
          // dS = P * (dP - sum_j P dP) * scale (zero above the diagonal, where P is zero)
          for (int64_t i = r0; i < r1; ++i) {
            float* ds = dS.data() + (i - r0) * S;
            const float* pr = P + i * S;
            const float dot = ops::dot(pr, ds, i + 1);
            for (int64_t j = 0; j <= i; ++j) ds[j] = pr[j] * (ds[j] - dot) * scale;
            std::fill(ds + i + 1, ds + r1, 0.0f);
          }
          // dQ[r0:r1] = dS K[0:r1] ; dK[0:r1] += dS^T Q[r0:r1]
          ops::sgemm(kN, kN, int(m), int(hd), int(r1), 1.0f, dS.data(), int(S), kb, int(kvw), 0.0f,
                     dqb + r0 * qw, int(qw));
          ops::sgemm(kT, kN, int(r1), int(hd), int(m), 1.0f, dS.data(), int(S), qb + r0 * qw,
                     int(qw), 1.0f, dkb, int(kvw));
        }
      }
    }
  }
}

}  // namespace sy::train
