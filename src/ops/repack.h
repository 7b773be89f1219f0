// Row-interleaved ("repacked") copies of weights: BF16 for the AVX512_BF16 kernel (layout in
// ops/gemm_bf16.h), I8_ROW for the W8A8 kernel (ops/gemm_w8a8_packed.h), ggml blocks for the
// int8 kernels, as follows. Ggml blocks: 16 rows per
// group, so that one AVX-512 register holds 4 consecutive codes of each of the 16 rows (one
// int32 lane per row). A vpdpbusd then serves 16 rows against one broadcast 4-byte piece of
// activations, the int32 sums need no horizontal reduction, and one f16 conversion yields
// the 16 rows' block scales. The row-major layout spends a byte shuffle, two scale
// conversions and a permute per 64 weights of each row (bench/results/quantized.md).
//
// Layout of a group of 16 rows (rows past the matrix's end are zero, scale 0), block by block;
// "piece i" is 64 bytes whose lane r (bytes 4r .. 4r + 3) holds 4 codes of row r:
//   Q8_0 (32 values): 16 f16 scales; pieces 0-7 = values 4i .. 4i + 3 as q + 128 (u8).
//     16 x 34 bytes, as row-major.
//   Q4_0 (32 values): 16 f16 scales; pieces 0-3, ggml's byte order: low nibbles values
//     4i .. 4i + 3, high nibbles 16 + 4i ...  16 x 18 bytes, as row-major.
//   MXFP4 (32 values): 16 E8M0 scale bytes; pieces 0-3 as Q4_0's.  16 x 17 bytes, as row-major.
//   Q4_K (256 values): 16 f16 d, 16 f16 dmin, the 8 sub-blocks' 6-bit scales unpacked to bytes
//     (sub-block j: 16 bytes, row order), then their mins likewise; then per pair g (0-3) of
//     sub-blocks 8 pieces of ggml's qs[32g .. 32g + 31]: low nibbles sub-block 2g's values
//     4i .. 4i + 3, high nibbles sub-block 2g + 1's.  16 x 148 bytes (row-major: 16 x 144).
//   Q6_K (256 values, "quad" t = values 4t .. 4t + 3, codes q + 32 in 0..63): 16 f16 d, the 16
//     sub-blocks' int8 scales (16 bytes each, row order), 32 pieces of low 4 bits (piece p:
//     quad p in the low nibbles, quad p + 32 in the high), 16 pieces of top 2 bits (piece u:
//     quads u, u + 16, u + 32, u + 48 in bits 0-1, 2-3, 4-5, 6-7).  16 x 210 bytes, as row-major.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>

#include "ops/weight.h"

namespace sy::ops {

constexpr int64_t kPackRows = 16;

// Whether block-type weights are repacked (by the loader, and by ReaLB's run-time q4
// conversion): on CPUs with the int8 kernels (AVX-512 VNNI), unless SY_REPACK=0 (which saves
// the copy's memory).
bool repack_enabled();
// Whether the loader repacks matrices of `dtype`: block types as above; BF16 where the BF16
// kernel runs (AVX512_BF16, SY_BF16_DOT not 0), unless SY_REPACK=0.
bool repack_enabled(DType dtype);

// Whether a repacked form of `dtype` exists (BF16, I8_ROW and all block types: Q8_0, Q4_0,
// MXFP4, Q4_K, Q6_K).
bool packable(DType dtype);

// Bytes of one group's block (16 rows x the type's block of values; BF16: 16 rows x a pair;
// I8_ROW: 16 rows x 4 codes) and of a whole group.
size_t packed_block_bytes(DType dtype);
size_t packed_group_bytes(DType dtype, int64_t cols);
// Bytes of w repacked: ceil(rows / 16) groups.
size_t packed_bytes(const WeightView& w);

// Writes w (row-major, packable(w.dtype)) repacked into dst (packed_bytes(w)).
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
