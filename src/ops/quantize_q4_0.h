// Q4_0 quantization of whole matrices at run time (ReaLB's q4 format, moe/low_precision_experts):
// the same bytes as ggml's reference quantizer (util/quant_blocks.h quantize_row), vectorised
// with AVX-512 where the CPU has it. The scalar reference spends ~1.5 ns per value, which made
// converting a hot rank's experts cost more than their 4-bit products saved.
#pragma once

#include <cstdint>

#include "ops/weight.h"

namespace sy::ops {

// One row of n values (n a multiple of 32) to n / 32 Q4_0 blocks at dst: identical bytes to
// quantize_row(GgmlType::Q4_0, ...), on every CPU.
void quantize_row_q4_0(const float* x, int64_t n, uint8_t* dst);

// Every row of src (F32, BF16 or anything to_f32 reads; cols a multiple of 32) to Q4_0 rows at
// dst (src.rows * dtype_bytes(Q4_0, src.cols) bytes). Rows are split over `threads`.
void quantize_rows_q4_0(const WeightView& src, uint8_t* dst, int threads = 1);

}  // namespace sy::ops
