#include "ops/repack.h"

#include <cstring>

#include "util/error.h"

namespace sy::ops {

bool packable(DType dtype) {
  return dtype == DType::Q8_0 || dtype == DType::Q4_0;
}

size_t packed_block_bytes(DType dtype) {
  SY_ASSERT(packable(dtype));
  return size_t(kPackRows) * dtype_bytes(dtype, 32);
}

size_t packed_group_bytes(DType dtype, int64_t cols) {
  return size_t(cols / 32) * packed_block_bytes(dtype);
}

size_t packed_bytes(const WeightView& w) {
  return size_t((w.rows + kPackRows - 1) / kPackRows) * packed_group_bytes(w.dtype, w.cols);
}

void pack_rows(const WeightView& w, uint8_t* dst) {
  SY_ASSERT(packable(w.dtype) && w.cols % 32 == 0 && w.data != nullptr);
  const bool q8 = w.dtype == DType::Q8_0;
  const size_t in_block = dtype_bytes(w.dtype, 32);  // 34 or 18: f16 d, then the codes
  const size_t code_bytes = in_block - 2, blocks = size_t(w.cols / 32);
  const size_t out_block = packed_block_bytes(w.dtype);
  std::memset(dst, 0, packed_bytes(w));  // rows past the end: scale 0, so they add 0
  for (int64_t r = 0; r < w.rows; ++r) {
    const auto* src = static_cast<const uint8_t*>(w.row(r));
    uint8_t* group = dst + size_t(r / kPackRows) * blocks * out_block;
    const size_t lane = size_t(r % kPackRows);
    for (size_t b = 0; b < blocks; ++b) {
      const uint8_t* in = src + b * in_block;
      uint8_t* out = group + b * out_block;
      std::memcpy(out + 2 * lane, in, 2);
      // Piece i (64 bytes) holds codes 4i .. 4i + 3 of each row in its lane.
      for (size_t i = 0; i < code_bytes / 4; ++i)
        for (size_t k = 0; k < 4; ++k) {
          const uint8_t c = in[2 + 4 * i + k];
          out[32 + 64 * i + 4 * lane + k] = q8 ? uint8_t(c ^ 0x80) : c;  // Q8_0: q + 128
        }
    }
  }
}

PackedWeight::PackedWeight(const WeightView& w) : bytes_(packed_bytes(w)) {
  storage_ = std::make_unique_for_overwrite<uint8_t[]>(bytes_ + 63);
  aligned_ = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage_.get()) + 63) &
                                        ~uintptr_t(63));
  pack_rows(w, aligned_);
}

}  // namespace sy::ops
