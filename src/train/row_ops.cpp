#include "train/row_ops.h"

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"

namespace sy::train {

void rmsnorm_forward(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y,
                     float* rstd) {
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double ss = 0;
    for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
    rstd[r] = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    ops::rmsnorm(xr, w, n, eps, y + r * n);  // the inference kernel, so both paths agree
  }
}

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t rows, int64_t n, float* dx, float* dw, bool accumulate_dx) {
  // dw is shared by all rows: each thread sums into its own copy, then one ordered reduction.
  for (int64_t r = 0; r < rows; ++r) {
    const float* dyr = dy + r * n;
    const float* xr = x + r * n;
    const float s = rstd[r];
    double dot = 0;  // sum_i dy_i w_i xhat_i
    for (int64_t i = 0; i < n; ++i) {
      const float xhat = xr[i] * s;
      dw[i] += dyr[i] * xhat;
      dot += double(dyr[i]) * w[i] * xhat;
    }
    const float mean = float(dot / double(n));
    float* dxr = dx + r * n;
    for (int64_t i = 0; i < n; ++i) {
      const float g = s * (dyr[i] * w[i] - xr[i] * s * mean);
      dxr[i] = accumulate_dx ? dxr[i] + g : g;
    }
  }
}

void swiglu_forward(const float* g, const float* u, int64_t n, float* h) { ops::swiglu(g, u, n, h); }

void swiglu_backward(const float* dh, const float* g, const float* u, int64_t n, float* dg,
                     float* du) {
#pragma omp parallel for schedule(static) if (n > 65536)
  for (int64_t i = 0; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(-g[i]));
    const float silu = g[i] * sig;
    du[i] = dh[i] * silu;
    dg[i] = dh[i] * u[i] * sig * (1.0f + g[i] * (1.0f - sig));
  }
}

void rope_backward(float* d, int64_t rot_dim, const float* cos, const float* sin) {
  // Forward: (a, b) -> (a c - b s, b c + a s). Its transpose: (da, db) -> (da c + db s, db c - da s).
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float da = d[i], db = d[i + half];
    d[i] = da * cos[i] + db * sin[i];
    d[i + half] = db * cos[i] - da * sin[i];
  }
}

double cross_entropy_forward_backward(float* logits, const int32_t* targets, int64_t rows,
                                      int64_t vocab, float scale) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * vocab;
    const int32_t target = targets[r];
    if (target < 0) {
      std::fill(z, z + vocab, 0.0f);
      continue;
    }
    const float mx = *std::max_element(z, z + vocab);
    double sum = 0;
    for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(z[i] - mx));
    const double lse = double(mx) + std::log(sum);
    total += lse - double(z[target]);
    const float inv = float(1.0 / sum);
    for (int64_t i = 0; i < vocab; ++i) z[i] = std::exp(z[i] - mx) * inv * scale;
    z[target] -= scale;
  }
  return total;
}

}  // namespace sy::train
