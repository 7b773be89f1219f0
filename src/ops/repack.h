// Row-interleaved ("repacked") copies of ggml block weights for the int8 kernels: 16 rows per
// group, so that one AVX-512 register holds 4 consecutive codes of each of the 16 rows (one
// int32 lane per row). A vpdpbusd then serves 16 rows against one broadcast 4-byte piece of
// activations, the int32 sums need no horizontal reduction, and one f16 conversion yields
// the 16 rows' block scales. The row-major layout spends a byte shuffle, two scale
// conversions and a permute per 64 weights of each row (bench/results/quantized.md).
//
// Layout of a group of 16 rows (rows past the matrix's end are zero, scale 0), block by block
// (32 values of each row):
//   16 f16 scales (row order), then the codes in 64-byte pieces, piece i lane r (bytes 4r ..
//   4r + 3) = row r's codes of values 4i .. 4i + 3 (Q8_0: q + 128 as u8; Q4_0: 8 pieces as
//   for Q8_0 would waste half of each byte, so 4 pieces whose low nibbles are values 4i ..
//   4i + 3 and high nibbles values 16 + 4i .. 16 + 4i + 3, ggml's own byte order).
// Same size as the row-major blocks: Q8_0 16 x 34 bytes per block, Q4_0 16 x 18.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ops/weight.h"

namespace sy::ops {

constexpr int64_t kPackRows = 16;

// Whether the int8 kernels have a repacked form of `dtype` (Q8_0, Q4_0).
bool packable(DType dtype);

// Bytes of one group's block (16 rows x 32 values) and of a whole group.
size_t packed_block_bytes(DType dtype);
size_t packed_group_bytes(DType dtype, int64_t cols);
// Bytes of w repacked: ceil(rows / 16) groups.
size_t packed_bytes(const WeightView& w);

// Writes w (row-major ggml blocks, packable(w.dtype)) repacked into dst (packed_bytes(w)).
void pack_rows(const WeightView& w, uint8_t* dst);

// One matrix repacked, in a 64-byte aligned buffer of its own (WeightView::packed points here).
class PackedWeight {
 public:
  explicit PackedWeight(const WeightView& w);
  const uint8_t* data() const { return aligned_; }
  size_t bytes() const { return bytes_; }

 private:
  std::unique_ptr<uint8_t[]> storage_;
  uint8_t* aligned_ = nullptr;
  size_t bytes_ = 0;
};

}  // namespace sy::ops
