// W8A8 (gemm_w8a8.h) on rows repacked like the BF16 kernel's (gemm_bf16.h): 16-row groups
// whose 64-byte pieces hold 4 consecutive int8 codes of each of the 16 rows, one int32 lane per
// row. One vpdpbusd then serves 16 output columns against 4 broadcast bytes of an activation
// row, and a tile of 8 activation rows x 32 columns keeps 16 accumulators in registers with no
// horizontal sums. (12 rows, as the BF16 kernel, made GCC 12 shuffle and spill the vpdpbusd
// accumulators: 280 GOP/s against 500-580 with 8, 1 thread, 512 x 2816 x 1024.) Integer sums are
// exact and the epilogue is the row-major kernel's float(sum - 128 sum(q_w)) * (s_w s_x): the same
// bits.
//
// Group layout (packed_group_bytes(I8_ROW, cols) bytes): 16 float scales, 16 int32 corrections
// 128 sum(q_w), then ceil(cols / 4) pieces; rows past the end and codes past cols are zero.
#pragma once

#include <cstdint>

#include "ops/weight.h"

namespace sy::ops::detail {

// Writes w (I8_ROW) repacked into dst (packed_bytes(w), ops/repack.h).
void pack_rows_w8a8(const WeightView& w, uint8_t* dst);

// Y[j, r] for weight rows [row_begin, row_end) (a multiple of 16 from the view's start) against
// n activation rows quantized as gemm_w8a8.cpp does: q[j * padded + k] = code + 128 (u8, 128
// past cols; padded >= 4 ceil(cols / 4)), scale[j]. Needs w.packed and AVX-512 VNNI.
void rows_w8a8_packed(const WeightView& w, int64_t row_begin, int64_t row_end, const uint8_t* q,
                      int64_t padded, const float* scale, int64_t n, float* y, int64_t ldy);

}  // namespace sy::ops::detail
