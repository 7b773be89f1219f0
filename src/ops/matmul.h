// Products of activations (float32) with stored weights (F32 / F16 / BF16).
//   matmul: Y[n, rows] = X[n, cols] . W^T     (W = [rows, cols], row-major)
// n up to 512 (decode, expert batches, prefill chunks; up to 64 for float32 weights) streams
// each weight row once with Highway SIMD (runtime-dispatched), FMAing it against all n rows of
// X in L1/L2-sized blocks: memory-bound decode runs near bandwidth and small batches near the
// FMA peak. Larger n widens weight panels to float32 (float32 weights are used in place) and
// calls OpenBLAS sgemm. Threads: OpenMP, set by set_num_threads (threads.h).
#pragma once

#include <cstdint>

#include "ops/weight.h"

namespace sy::ops {

// y[rows] = W x[cols]
void gemv(const WeightView& w, const float* x, float* y);

// Y[n, rows] = X[n, cols] W^T. x_stride / y_stride are row strides in floats (0 = dense).
void matmul(const WeightView& w, const float* x, int64_t n, float* y, int64_t x_stride = 0,
            int64_t y_stride = 0);

// Y[m, n] = A[m, k] B[n, k]^T on float32 (attention scores, tests); alpha scales the product.
void sgemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* y, int64_t ldy, float alpha = 1.0f);
// Y[m, n] = A[m, k] B[k, n] on float32 (attention probabilities times values).
void sgemm_nn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* y, int64_t ldy);

}  // namespace sy::ops
