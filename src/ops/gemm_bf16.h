// BF16 products with BF16 arithmetic: Y[n, rows] = X[n, cols] W^T for BF16 weights, where the
// CPU has AVX512_BF16. The activations are rounded to BF16 (to nearest, ties to even) once per
// call, as llama.cpp does for BF16 weights, and vdpbf16ps sums pairs of BF16 products into
// float32 accumulators: twice the multiply-adds per instruction of float32 FMAs, and the
// weights are never widened. matmul takes this path for every batch size, so that prefill,
// decode and every batching compute a token alike. The float32 path (stream kernel, widen +
// sgemm: exact products of the BF16 weights with float32 activations) stays for CPUs without
// the instructions and for exactness tests against float32 references (SY_BF16_DOT=0).
//
// Layout: 16-row groups whose 64-byte pieces hold the pair (k, k + 1) of each of the 16 rows,
// one float32 lane per row: one vdpbf16ps serves 16 output columns against one broadcast pair
// of an activation row. The loader repacks BF16 matrices once (ops/repack.h); a view without
// the copy (offloaded experts, SY_REPACK=0) is repacked chunk by chunk on each call.
#pragma once

#include <cstdint>

#include "ops/weight.h"

namespace sy::ops::detail {

// True when the CPU has AVX512_BF16 and SY_BF16_DOT is not 0.
bool bf16_dot_enabled();

// Writes w (BF16) repacked into dst (packed_bytes(w), ops/repack.h): 16-row groups of
// ceil(cols / 2) pieces of 64 bytes, piece p's lane r = row r's pair (2p, 2p + 1), the odd
// column's partner and the rows past the end zero.
void pack_rows_bf16(const WeightView& w, uint8_t* dst);

// Y[j, r] = sum_k bf16(X[j, k]) W[r, k] in float32 (w.dtype == BF16), split over nt threads.
// Reads w.packed where the loader made it, else repacks chunks per call. Each output is summed
// pair by pair in the same order whatever n, the thread count or the tile: a token's result
// does not depend on the batch it came in (bit for bit).
void matmul_bf16(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
                 int nt);

}  // namespace sy::ops::detail
