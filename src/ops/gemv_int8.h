// Integer dot products for ggml block weights (Q8_0, Q4_0): the activations are quantized to
// int8 blocks of 32 (as llama.cpp's q8_0 activations), each block pair of a weight row meets
// them in one AVX-512 VNNI vpdpbusd, and only the per-block int32 sums are scaled in float.
// Half the bytes of BF16 per weight (Q8_0) with about as few instructions per weight, so decode
// is bounded by memory rather than by widening int8 to float.
// Internal to ops (matmul.cpp chooses it); exposed for tests and bench_kernels.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/weight.h"

namespace sy::ops::detail {

// True when the CPU has AVX-512 BW + VL + VNNI and SY_INT8_DOT is not 0 (the float kernels of
// gemv_simd.cpp serve every other case).
bool int8_dot_enabled();

// Activation rows quantized for the int8 kernel of one weight type: per block of 32 values,
// d = max|x| / 127 and q = round(x / d), with d kept as f16 as ggml's block_q8_0 keeps it (so
// Q4_0 logits equal llama.cpp's to float rounding: bench/results/llama_cpp_agreement.md).
struct Int8Activations {
  int64_t n = 0;
  int64_t cols = 0;           // a multiple of 32
  int64_t padded = 0;         // cols rounded up to 64 (one zmm: two blocks); the tail is zero
  bool unsigned_q = false;    // Q8_0 weights: q + 128 as u8; Q4_0 weights: q as s8
  std::vector<uint8_t> q;     // [n, padded]
  std::vector<float> scale;   // [n, padded / 4]: d of each block, repeated for its 8 int32 lanes
  std::vector<int32_t> base;  // Q4_0: [n, padded / 4] = -8 * (sum of the lane's 4 q)
};

// Fills `a` for weights of type `wtype` (Q8_0 or Q4_0) from x [n, cols] with row stride ldx.
void quantize_activations(DType wtype, const float* x, int64_t n, int64_t ldx, int64_t cols,
                          Int8Activations* a);

// Y[j, r] = dot(W row r, dequantized activation row j) for r in [row_begin, row_end), all j.
// Requires int8_dot_enabled(). Single-threaded; the caller splits rows.
void gemv_rows_int8(const WeightView& w, int64_t row_begin, int64_t row_end,
                    const Int8Activations& a, float* y, int64_t ldy);

}  // namespace sy::ops::detail
