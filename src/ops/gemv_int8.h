// Integer dot products for ggml block weights (Q8_0, Q4_0, Q4_K, Q6_K, MXFP4): the activations are
// quantized to int8 (as llama.cpp quantizes them), 64 weights of a row meet them in one AVX-512
// VNNI vpdpbusd, and only the per-lane int32 sums are scaled in float.
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

// Activation rows quantized for the int8 kernel of one weight type, as llama.cpp quantizes
// them: for Q8_0 / Q4_0 / MXFP4 weights per block of 32 (ggml's block_q8_0: d = max|x| / 127 kept
// as f16, q = x * (127 / max|x|) rounded to nearest even, as its x86 SIMD quantizer); for Q4_K /
// Q6_K per block of 256 (block_q8_K: float d, q rounded to nearest even). So Q4_0 logits equal
// llama.cpp's to float rounding (bench/results/llama_cpp_agreement.md).
struct Int8Activations {
  int64_t n = 0;
  int64_t cols = 0;                // a multiple of the weight type's block
  int64_t padded = 0;              // cols rounded up to 64 (one zmm); the tail is zero
  bool unsigned_q = false;         // Q8_0 weights: q + 128 as u8; the others: q as s8
  std::vector<uint8_t> q;          // [n, padded]
  std::vector<float> scale;        // [n, padded / 4]: d of each int32 lane's 4 values
  std::vector<int32_t> lane_sum;   // not Q8_0: [n, padded / 4], the sum of each lane's 4 q
  std::vector<int32_t> block_sum;  // for repacked weights: [n, padded / 32], each block's sum of q
  std::vector<int32_t> sub16_sum;  // for repacked Q6_K: [n, padded / 16], sums of 16 q
};

// Fills `a` for weights of type `wtype` (a block type) from x [n, cols] with row stride ldx.
// For repacked weights (`packed`, ops/repack.h) the codes are signed for Q8_0 too, and the block
// sums are filled.
void quantize_activations(DType wtype, const float* x, int64_t n, int64_t ldx, int64_t cols,
                          Int8Activations* a, bool packed = false);

// Y[j, r] = dot(W row r, dequantized activation row j) for r in [row_begin, row_end), all j.
// Requires int8_dot_enabled(). Single-threaded; the caller splits rows.
void gemv_rows_int8(const WeightView& w, int64_t row_begin, int64_t row_end,
                    const Int8Activations& a, float* y, int64_t ldy);

// The same on repacked weights (w.packed set, ops/repack.h; activations quantized with
// packed = true); row_begin a multiple of 16 (kPackRows).
void gemv_rows_int8_packed(const WeightView& w, int64_t row_begin, int64_t row_end,
                           const Int8Activations& a, float* y, int64_t ldy);

}  // namespace sy::ops::detail
