#include "ops/norm_rows.h"

#include <cmath>

#include "ops/elementwise.h"

namespace sy::ops {

void rmsnorm_rows(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y,
                  float* rstd) {
#pragma omp parallel for schedule(dynamic, 64) if (rows >= 32)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    if (rstd) {
      double ss = 0;
      for (int64_t i = 0; i < n; ++i) ss += double(xr[i]) * xr[i];
      rstd[r] = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    }
    rmsnorm(xr, w, n, eps, y + r * n);
  }
}

void layernorm_rows(const float* x, const float* w, const float* b, int64_t rows, int64_t n,
                    float eps, float* y) {
#pragma omp parallel for schedule(dynamic, 64) if (rows >= 32)
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * n;
    double sum = 0, ss = 0;
    for (int64_t i = 0; i < n; ++i) sum += xr[i];
    const double mean = sum / double(n);
    for (int64_t i = 0; i < n; ++i) ss += (xr[i] - mean) * (xr[i] - mean);
    const float rstd = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
    float* yr = y + r * n;
    for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - float(mean)) * rstd * w[i] + (b ? b[i] : 0.0f);
  }
}

}  // namespace sy::ops
