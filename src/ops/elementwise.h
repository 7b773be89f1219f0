// Row-wise kernels used by the transformer, all on float32 activations. Each has a plain
// scalar twin in tests/unit/ops_test.cpp.
#pragma once

#include <cstdint>

namespace sy::ops {

// y = x / sqrt(mean(x^2) + eps) * weight. In-place allowed (y == x). Sum of squares in double.
void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* y);

// In-place numerically stable softmax over n values.
void softmax(float* x, int64_t n);

// out[i] = silu(gate[i]) * up[i], silu(g) = g / (1 + exp(-g)). out may alias gate or up.
void swiglu(const float* gate, const float* up, int64_t n, float* out);

// Backward of swiglu: dgate = dh * up * silu'(gate), dup = dh * silu(gate).
void swiglu_backward(const float* dh, const float* gate, const float* up, int64_t n, float* dgate,
                     float* dup);

// sum_i a[i] * b[i] (float accumulation in SIMD lanes)
float dot(const float* a, const float* b, int64_t n);

// y[i] += x[i]
void add(const float* x, int64_t n, float* y);
// y[i] += a * x[i]
void axpy(float a, const float* x, int64_t n, float* y);

// Rotary embedding, "rotate_half" (GPT-NeoX / Hugging Face) layout on one head vector of
// `head_dim` values, of which the first `rot_dim` rotate: pairs (i, i + rot_dim/2).
// cos/sin hold rot_dim/2 values for this position.
void rope_neox(float* head, int64_t rot_dim, const float* cos, const float* sin);

// Backward of one rmsnorm row y = x * rstd * w (rstd saved by the forward):
// dw[i] += dy[i] * x[i] * rstd; dx (+)= rstd * (dy * w - x * rstd * mean(dy * w * x * rstd)).
void rmsnorm_backward(const float* dy, const float* x, const float* w, float rstd, int64_t n,
                      float* dx, float* dw, bool accumulate_dx);

// The float32 scalars of one AdamW step (train/adamw.cpp), as torch casts them.
struct AdamWScalars {
  float decay, b1, one_minus_b1, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size;
};
// torch.optim.AdamW's single-tensor update on n elements, bit for bit (IEEE sqrt / div, the two
// fused multiply-adds torch's vectorized kernels use), with g = grad * grad_scale (the clip
// coefficient; the product rounds as torch's in-place grad.mul_ does).
void adamw_update(const AdamWScalars& k, float grad_scale, float* theta, const float* grad,
                  float* m, float* v, int64_t n);

// sum_i x[i]^2 in double.
double sum_squares(const float* x, int64_t n);
// y[i] *= a
void scale(float a, int64_t n, float* y);

}  // namespace sy::ops
