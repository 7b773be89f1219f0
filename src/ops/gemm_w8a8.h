// W8A8: int8 weights with one scale per row (per output channel) times int8 activations with
// one scale per token, summed in int32 over the whole row. Unlike ggml's 32-value blocks, no
// float work happens inside the dot product, so the compute-bound products of prefill run at
// the integer units' rate (AVX-512 VNNI: 64 multiply-adds per instruction, twice BF16's).
// ReaLB's low-precision path (moe/precision_policy.h) converts a rank's experts to it at run
// time. Weights in this format are DType::I8_ROW; each row is
//   int8 q[cols] | float scale | int32 sum(q)          (dtype_bytes(I8_ROW, cols) bytes)
// with value = scale * q, scale = max|row| / 127, q = x * (1 / scale) rounded to nearest
// (ties to even), in -127..127.
#pragma once

#include <cstdint>

#include "ops/weight.h"

namespace sy::ops {

// Converts every row of `src` (any dtype to_f32 reads, block types included) to I8_ROW rows at
// dst (src.rows * dtype_bytes(I8_ROW, src.cols) bytes). Rows are split over `threads`.
void quantize_rows_i8(const WeightView& src, void* dst, int threads = 1);

// The dequantized value of an I8_ROW matrix (tests and references): [rows, cols] floats.
void dequantize_rows_i8(const WeightView& w, float* dst);

namespace detail {

// Y[j, r] = s_w[r] s_x[j] sum_k q_w[r, k] q_x[j, k], where each activation row j is quantized
// to int8 the same way (s_x[j] = max|x_j| / 127, ties to even). AVX-512 VNNI
// where the CPU has it, else a scalar loop with the same integer arithmetic (identical result).
void matmul_w8a8(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
                 int threads);

// True when the CPU runs the VNNI kernel and SY_INT8_DOT is not 0 (ReaLB refuses the int8
// format otherwise: the scalar loop is correct but no faster than BF16).
bool w8a8_fast();

}  // namespace detail
}  // namespace sy::ops
