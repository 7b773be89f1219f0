// RMSNorm over many rows at once, optionally keeping each row's 1/rms for a backward pass.
#pragma once

#include <cstdint>

namespace sy::ops {

// y[r] = rmsnorm(x[r]) * w for rows of n values (ops::rmsnorm per row, rows in parallel when
// there are many; y may alias x). rstd (optional, [rows]): 1 / sqrt(mean(x^2) + eps) in double.
void rmsnorm_rows(const float* x, const float* w, int64_t rows, int64_t n, float eps, float* y,
                  float* rstd = nullptr);

// y[r] = (x[r] - mean) / sqrt(var + eps) * w + b (torch's LayerNorm, biased variance; Phi-3.5-MoE;
// b null: no bias, DBRX),
// rows in parallel when there are many; y may alias x.
void layernorm_rows(const float* x, const float* w, const float* b, int64_t rows, int64_t n,
                    float eps, float* y);

}  // namespace sy::ops
