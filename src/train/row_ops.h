// Row-wise backward passes of the transformer's elementwise pieces (float32); their forwards are
// the inference kernels in ops/. Backward functions accumulate (+=) into weight gradients; input
// gradients are written or added as each function says, so a residual stream can collect several
// contributions.
#pragma once

#include <cstdint>

namespace sy::train {

// RMSNorm backward (forward: ops::rmsnorm_rows with rstd). dx (+)= d/dx, dw += d/dw. x and rstd are
// the forward's input and saved values.
void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t rows, int64_t n, float* dx, float* dw, bool accumulate_dx);

// Backward of h = silu(g) * u (ops::swiglu): dg, du (written).
void swiglu_backward(const float* dh, const float* g, const float* u, int64_t n, float* dg,
                     float* du);

// Rotary embedding backward on one head (rotate-half layout): the inverse rotation.
void rope_backward(float* dhead, int64_t rot_dim, const float* cos, const float* sin);

// Cross-entropy over rows of logits with targets (-1 = no target). Returns the summed loss
// (double); overwrites logits with d(loss * scale)/dlogits (rows without a target get 0).
double cross_entropy_forward_backward(float* logits, const int32_t* targets, int64_t rows,
                                      int64_t vocab, float scale);

}  // namespace sy::train
