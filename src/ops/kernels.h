// Internal entry points of the Highway (runtime-dispatched) kernels behind matmul.h.
// Not part of the public ops API: callers use gemv / matmul.
#pragma once

#include <cstdint>

#include "ops/weight.h"

namespace sy::ops::detail {

// Y[j, r] = dot(W row r, X row j) for rows r in [row_begin, row_end) and j in [0, n).
// Each block of weight rows is read from memory once and applied to all n rows of X
// (in chunks of 4, the later chunks hitting cache). Single-threaded; the caller splits rows.
void gemv_rows(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x, int64_t n,
               int64_t ldx, float* y, int64_t ldy);

// dst[(r - row_begin) * cols + c] = float(W[r, c]): widens a panel of rows to float32.
void widen_rows(const WeightView& w, int64_t row_begin, int64_t row_end, float* dst);

// The two paths of matmul (matmul.cpp), callable directly so bench_kernels can find the
// crossover. nt = OpenMP threads; OpenBLAS runs single-threaded inside each.
void matmul_stream(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y,
                   int64_t ldy, int nt);
// Activations quantized to int8 once, then gemv_int8.h's integer dot products (block types).
void matmul_int8(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
                 int nt);
void matmul_sgemm(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y,
                  int64_t ldy, int nt);

}  // namespace sy::ops::detail
