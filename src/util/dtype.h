// Element types of stored tensors and scalar conversions between them.
#pragma once

#include <cstdint>
#include <cstring>
#include <string_view>

namespace sy {

// F32, F16, BF16: one value per element. Q8_0, Q4_0, MXFP4 (32 values in a block of 34 / 18 /
// 17 bytes), Q4_K and Q6_K (256 values in 144 / 210 bytes): ggml's block formats
// (util/quant_blocks.h), only for weight matrices whose rows hold whole blocks (GGUF files).
// I8_ROW: int8 with one float scale per row (ops/gemm_w8a8.h), made at run time (ReaLB's
// low-precision experts), never stored in a file.
enum class DType : uint8_t { F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, MXFP4, I8_ROW };

inline bool is_block_type(DType t) {
  return t == DType::Q8_0 || t == DType::Q4_0 || t == DType::Q4_K || t == DType::Q6_K ||
         t == DType::MXFP4;
}
// Values per block: 1 for element types.
inline int64_t dtype_block(DType t) {
  return t == DType::Q4_K || t == DType::Q6_K ? 256 : is_block_type(t) ? 32 : 1;
}
// Bytes per element of an element type (not a block type, not I8_ROW).
inline size_t dtype_size(DType t) {
  return t == DType::F32 ? 4 : 2;
}
// Bytes of n consecutive values (n a multiple of the block for a block type; for I8_ROW, n is
// one row: its codes, scale and sum).
inline size_t dtype_bytes(DType t, int64_t n) {
  if (t == DType::I8_ROW) return size_t(n) + 8;
  if (t == DType::Q8_0) return size_t(n / 32) * 34;
  if (t == DType::Q4_0) return size_t(n / 32) * 18;
  if (t == DType::Q4_K) return size_t(n / 256) * 144;
  if (t == DType::Q6_K) return size_t(n / 256) * 210;
  if (t == DType::MXFP4) return size_t(n / 32) * 17;
  return size_t(n) * dtype_size(t);
}
std::string_view dtype_name(DType t);

inline float bf16_to_f32(uint16_t h) {
  uint32_t bits = uint32_t(h) << 16;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// Round-to-nearest-even, NaN kept quiet (as PyTorch does).
inline uint16_t f32_to_bf16(float f) {
  uint32_t bits;
  std::memcpy(&bits, &f, 4);
  if ((bits & 0x7fffffffu) > 0x7f800000u) return uint16_t((bits >> 16) | 0x40);
  bits += 0x7fffu + ((bits >> 16) & 1u);
  return uint16_t(bits >> 16);
}

float f16_to_f32(uint16_t h);
uint16_t f32_to_f16(float f);

// Converts n elements of type `t` at `src` to float32 (n a multiple of 32 for a block type; one
// whole row for I8_ROW).
void to_f32(DType t, const void* src, float* dst, size_t n);

}  // namespace sy
