// The three products of a linear layer y = x W^T on float32 row-major data (W = [out, in], as
// checkpoints store it), each one ops::sgemm call (thread-count independent results).
#pragma once

#include <cstdint>

namespace sy::ops {

// y[n, out] = x[n, in] W^T   (y += ... when accumulate)
void linear_forward(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y,
                    bool accumulate = false);
// dx[n, in] = dy[n, out] W   (dx += ... when accumulate)
void linear_backward_input(const float* dy, int64_t n, int64_t out, const float* w, int64_t in,
                           float* dx, bool accumulate = false);
// dw[out, in] += dy^T x
void linear_backward_weight(const float* dy, int64_t n, int64_t out, const float* x, int64_t in,
                            float* dw);
// db[out] += column sums of dy[n, out]
void bias_backward(const float* dy, int64_t n, int64_t out, float* db);

}  // namespace sy::ops
