#include "ops/repack.h"

#include <cstdlib>
#include <cstring>

#include "ops/gemm_bf16.h"
#include "ops/gemm_w8a8_packed.h"
#include "ops/gemv_int8.h"
#include "util/error.h"
#include "util/quant_blocks.h"

namespace sy::ops {

bool packable(DType dtype) {
  return dtype == DType::BF16 || dtype == DType::I8_ROW || dtype == DType::Q8_0 ||
         dtype == DType::Q4_0 || dtype == DType::MXFP4 || dtype == DType::Q4_K ||
         dtype == DType::Q6_K;
}

size_t packed_block_bytes(DType dtype) {
  SY_ASSERT(packable(dtype));
  if (dtype == DType::BF16 || dtype == DType::I8_ROW) return size_t(kPackRows) * 4;
  return dtype == DType::Q4_K ? size_t(kPackRows) * 148
                              : size_t(kPackRows) * dtype_bytes(dtype, dtype_block(dtype));
}

size_t packed_group_bytes(DType dtype, int64_t cols) {
  if (dtype == DType::BF16) return size_t((cols + 1) / 2) * packed_block_bytes(dtype);
  if (dtype == DType::I8_ROW) return 128 + size_t((cols + 3) / 4) * packed_block_bytes(dtype);
  return size_t(cols / dtype_block(dtype)) * packed_block_bytes(dtype);
}

size_t packed_bytes(const WeightView& w) {
  return size_t((w.rows + kPackRows - 1) / kPackRows) * packed_group_bytes(w.dtype, w.cols);
}

namespace {

// Row `lane` of a group: one row-major block `in` (a scale of scale_bytes, then the codes)
// into the group's block `out`.
void pack_block_32(bool q8, size_t scale_bytes, size_t code_bytes, const uint8_t* in, size_t lane,
                   uint8_t* out) {
  std::memcpy(out + scale_bytes * lane, in, scale_bytes);
  for (size_t i = 0; i < code_bytes / 4; ++i)
    for (size_t k = 0; k < 4; ++k) {
      const uint8_t c = in[scale_bytes + 4 * i + k];
      out[16 * scale_bytes + 64 * i + 4 * lane + k] = q8 ? uint8_t(c ^ 0x80) : c;  // Q8_0: q + 128
    }
}

void pack_block_q4_k(const uint8_t* in, size_t lane, uint8_t* out) {
  std::memcpy(out + 2 * lane, in, 2);           // d
  std::memcpy(out + 32 + 2 * lane, in + 2, 2);  // dmin
  for (int j = 0; j < 8; ++j) {
    uint8_t sc, m;
    scale_min_k4(j, in + 4, sc, m);
    out[64 + 16 * j + lane] = sc;
    out[192 + 16 * j + lane] = m;
  }
  for (size_t g = 0; g < 4; ++g)
    for (size_t i = 0; i < 8; ++i)
      std::memcpy(out + 320 + 512 * g + 64 * i + 4 * lane, in + 16 + 32 * g + 4 * i, 4);
}

// ggml's Q6_K block: value v's code (0..63) from ql[128], qh[64] (as dequant_q6_k reads them).
int q6_k_code(const uint8_t* in, int v) {
  const int h = v / 128, k = (v % 128) / 32, l = v % 32;
  const uint8_t ql = in[64 * h + l + 32 * (k & 1)];
  const int low = k < 2 ? ql & 0x0F : ql >> 4;
  return low | (((in[128 + 32 * h + l] >> (2 * k)) & 3) << 4);
}

void pack_block_q6_k(const uint8_t* in, size_t lane, uint8_t* out) {
  std::memcpy(out + 2 * lane, in + 208, 2);                               // d
  for (size_t s = 0; s < 16; ++s) out[32 + 16 * s + lane] = in[192 + s];  // int8 scales
  for (int v = 0; v < 256; ++v) {
    const int code = q6_k_code(in, v), t = v / 4, k = v % 4;
    uint8_t& low = out[288 + 64 * size_t(t % 32) + 4 * lane + size_t(k)];
    low |= uint8_t((code & 0x0F) << (t < 32 ? 0 : 4));
    out[2336 + 64 * size_t(t % 16) + 4 * lane + size_t(k)] |=
        uint8_t((code >> 4) << (2 * (t / 16)));
  }
}

}  // namespace

void pack_rows(const WeightView& w, uint8_t* dst) {
  if (w.dtype == DType::BF16) return detail::pack_rows_bf16(w, dst);
  if (w.dtype == DType::I8_ROW) return detail::pack_rows_w8a8(w, dst);
  const int64_t per_block = dtype_block(w.dtype);
  SY_ASSERT(packable(w.dtype) && w.cols % per_block == 0 && w.data != nullptr);
  const size_t in_block = dtype_bytes(w.dtype, per_block), blocks = size_t(w.cols / per_block);
  const size_t out_block = packed_block_bytes(w.dtype);
  std::memset(dst, 0, packed_bytes(w));  // rows past the end: scale 0, so they add 0
  for (int64_t r = 0; r < w.rows; ++r) {
    const auto* src = static_cast<const uint8_t*>(w.row(r));
    uint8_t* group = dst + size_t(r / kPackRows) * blocks * out_block;
    const size_t lane = size_t(r % kPackRows);
    for (size_t b = 0; b < blocks; ++b) {
      if (w.dtype == DType::Q4_K)
        pack_block_q4_k(src + b * in_block, lane, group + b * out_block);
      else if (w.dtype == DType::Q6_K)
        pack_block_q6_k(src + b * in_block, lane, group + b * out_block);
      else {
        const size_t scale_bytes = w.dtype == DType::MXFP4 ? 1 : 2;
        pack_block_32(w.dtype == DType::Q8_0, scale_bytes, in_block - scale_bytes,
                      src + b * in_block, lane, group + b * out_block);
      }
    }
  }
}

namespace {

bool repack_allowed() {
  const char* env = std::getenv("SY_REPACK");
  return !(env && std::strcmp(env, "0") == 0);
}

}  // namespace

bool repack_enabled() {
  return detail::int8_dot_enabled() && repack_allowed();
}

bool repack_enabled(DType dtype) {
  if (dtype == DType::BF16) return detail::bf16_dot_enabled() && repack_allowed();
  return packable(dtype) && repack_enabled();
}

PackedWeight::PackedWeight(const WeightView& w) : bytes_(packed_bytes(w)) {
  storage_ = std::make_unique_for_overwrite<uint8_t[]>(bytes_ + 63);
  aligned_ = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(storage_.get()) + 63) &
                                        ~uintptr_t(63));
  pack_rows(w, aligned_);
}

}  // namespace sy::ops
