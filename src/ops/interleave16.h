// The transposition behind the repacked layouts of the BF16 and W8A8 kernels (gemm_bf16.h,
// gemm_w8a8_packed.h): 16 rows cut into 4-byte pieces, written piece by piece with the 16 rows'
// pieces side by side, so that one 64-byte load gives one int32 / float32 lane per row.
// AVX-512 (a 16 x 16 transpose of 32-bit elements per 64 bytes of each row): call it only
// where the CPU has AVX-512 BW.
#pragma once

#include <cstdint>

namespace sy::ops::detail {

// dst[64 p + 4 r .. + 3] = rows[r][4 p .. 4 p + 3] for p < ceil(row_bytes / 4), r < 16; rows
// r >= valid and bytes at or past row_bytes read as zero (rows[r] for r >= valid is not read).
void interleave16(const uint8_t* const rows[16], int valid, int64_t row_bytes, uint8_t* dst);

}  // namespace sy::ops::detail
