#include "util/quant_blocks.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "util/dtype.h"
#include "util/error.h"

namespace sy {
namespace {

float half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

void dequant_q8_0(const uint8_t* b, float* y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 34, y += 32) {
    const float d = half(b);
    for (int j = 0; j < 32; ++j) y[j] = float(int8_t(b[2 + j])) * d;
  }
}

void dequant_q4_0(const uint8_t* b, float* y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 18, y += 32) {
    const float d = half(b);
    for (int j = 0; j < 16; ++j) {
      y[j] = float((b[2 + j] & 0x0F) - 8) * d;
      y[j + 16] = float((b[2 + j] >> 4) - 8) * d;
    }
  }
}

void dequant_q4_k(const uint8_t* b, float* y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 144) {
    const float d = half(b), dmin = half(b + 2);
    const uint8_t* scales = b + 4;
    const uint8_t* q = b + 16;
    for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
      uint8_t sc, m;
      scale_min_k4(is, scales, sc, m);
      const float d1 = d * float(sc), m1 = dmin * float(m);
      scale_min_k4(is + 1, scales, sc, m);
      const float d2 = d * float(sc), m2 = dmin * float(m);
      for (int l = 0; l < 32; ++l) *y++ = d1 * float(q[l] & 0x0F) - m1;
      for (int l = 0; l < 32; ++l) *y++ = d2 * float(q[l] >> 4) - m2;
    }
  }
}

void dequant_q6_k(const uint8_t* b, float* y, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, b += 210) {
    const uint8_t* ql = b;
    const uint8_t* qh = b + 128;
    const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
    const float d = half(b + 208);
    for (int n = 0; n < 256; n += 128, y += 128, ql += 64, qh += 32, sc += 8)
      for (int l = 0; l < 32; ++l) {
        const int is = l / 16;
        const int q1 = int8_t((ql[l] & 0x0F) | (((qh[l] >> 0) & 3) << 4)) - 32;
        const int q2 = int8_t((ql[l + 32] & 0x0F) | (((qh[l] >> 2) & 3) << 4)) - 32;
        const int q3 = int8_t((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
        const int q4 = int8_t((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
        y[l] = d * float(sc[is]) * float(q1);
        y[l + 32] = d * float(sc[is + 2]) * float(q2);
        y[l + 64] = d * float(sc[is + 4]) * float(q3);
        y[l + 96] = d * float(sc[is + 6]) * float(q4);
      }
  }
}

// E8M0 scale halved (ggml stores twice the E2M1 values, so it scales by 2^(e - 128)).
float e8m0_half(uint8_t e) {
  const uint32_t bits = e < 2 ? uint32_t(0x00200000) << e : uint32_t(e - 1) << 23;
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

// E2M1 values doubled (ggml's kvalues_mxfp4), so that the scale is 2^(e - 128).
constexpr int8_t kMxfp4Values[16] = {0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12};

void dequant_mxfp4(const uint8_t* b, float* y, int64_t blocks) {
  const int8_t* kValues = kMxfp4Values;
  for (int64_t i = 0; i < blocks; ++i, b += 17, y += 32) {
    const float d = e8m0_half(b[0]);
    for (int j = 0; j < 16; ++j) {
      y[j] = float(kValues[b[1 + j] & 0x0F]) * d;
      y[j + 16] = float(kValues[b[1 + j] >> 4]) * d;
    }
  }
}

void quant_q8_0(const float* x, uint8_t* b, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, b += 34) {
    float amax = 0;
    for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
    const float d = amax / 127.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < 32; ++j) b[2 + j] = uint8_t(int8_t(std::lround(x[j] * id)));
  }
}

void quant_q4_0(const float* x, uint8_t* b, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, b += 18) {
    float amax = 0, max = 0;  // the value of largest magnitude, with its sign
    for (int j = 0; j < 32; ++j)
      if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), max = x[j];
    const float d = max / -8.0f;
    const float id = d != 0 ? 1.0f / d : 0.0f;
    put_half(b, d);
    for (int j = 0; j < 16; ++j) {
      const int lo = std::min(15, int(int8_t(x[j] * id + 8.5f)));
      const int hi = std::min(15, int(int8_t(x[j + 16] * id + 8.5f)));
      b[2 + j] = uint8_t(lo | (hi << 4));
    }
  }
}

// Q4_K: each sub-block of 32 gets the affine map min..max -> 0..15; the 8 scales and 8 mins
// are then stored as 6-bit multiples of the super-block's d and dmin (the inverse of
// scale_min_k4's packing). A plain min / max fit, not ggml's iterative search: valid blocks,
// slightly larger error than llama.cpp's quantizer.
void quant_q4_k(const float* x, uint8_t* b, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += 256, b += 144) {
    float scale[8], min[8], max_scale = 0, max_min = 0;
    for (int s = 0; s < 8; ++s) {
      float lo = 0, hi = 0;  // the range always holds 0, so mins are >= 0 after negation
      for (int l = 0; l < 32; ++l)
        lo = std::min(lo, x[32 * s + l]), hi = std::max(hi, x[32 * s + l]);
      scale[s] = (hi - lo) / 15.0f;
      min[s] = -lo;
      max_scale = std::max(max_scale, scale[s]);
      max_min = std::max(max_min, min[s]);
    }
    const float d = max_scale / 63.0f, dmin = max_min / 63.0f;
    put_half(b, d);
    put_half(b + 2, dmin);
    const float d_eff = half(b), dmin_eff = half(b + 2);
    uint8_t sc[8], m[8];
    for (int s = 0; s < 8; ++s) {
      sc[s] = uint8_t(std::clamp(d_eff > 0 ? int(std::lround(scale[s] / d_eff)) : 0, 0, 63));
      m[s] = uint8_t(std::clamp(dmin_eff > 0 ? int(std::lround(min[s] / dmin_eff)) : 0, 0, 63));
    }
    uint8_t* scales = b + 4;
    for (int j = 0; j < 4; ++j) {
      scales[j] = uint8_t(sc[j] | ((sc[j + 4] >> 4) << 6));
      scales[j + 4] = uint8_t(m[j] | ((m[j + 4] >> 4) << 6));
      scales[j + 8] = uint8_t((sc[j + 4] & 0x0F) | ((m[j + 4] & 0x0F) << 4));
    }
    uint8_t q[256];
    for (int s = 0; s < 8; ++s) {
      const float step = d_eff * float(sc[s]), offset = dmin_eff * float(m[s]);
      for (int l = 0; l < 32; ++l) {
        const float v = step > 0 ? (x[32 * s + l] + offset) / step : 0.0f;
        q[32 * s + l] = uint8_t(std::clamp(int(std::lround(v)), 0, 15));
      }
    }
    for (int g = 0; g < 4; ++g)
      for (int l = 0; l < 32; ++l)
        b[16 + 32 * g + l] = uint8_t(q[64 * g + l] | (q[64 * g + 32 + l] << 4));
  }
}

// MXFP4 as ggml's reference quantizer: the exponent puts the block's largest magnitude in
// [8, 16) scale steps (the largest code is 12: the top of the range clips, as in ggml), and
// each value takes the code nearest it (the first of equals, so 0 rather than -0).
void quant_mxfp4(const float* x, uint8_t* b, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += 32, b += 17) {
    float amax = 0;
    for (int l = 0; l < 32; ++l) amax = std::max(amax, std::fabs(x[l]));
    const float e = amax > 0 ? std::floor(std::log2(amax)) - 2 + 127 : 0;
    b[0] = uint8_t(std::clamp(e, 0.0f, 255.0f));
    const float d = e8m0_half(b[0]);
    auto nearest = [d](float v) {
      int best = 0;
      for (int c = 1; c < 16; ++c)
        if (std::fabs(float(kMxfp4Values[c]) * d - v) <
            std::fabs(float(kMxfp4Values[best]) * d - v))
          best = c;
      return best;
    };
    for (int j = 0; j < 16; ++j) b[1 + j] = uint8_t(nearest(x[j]) | (nearest(x[j + 16]) << 4));
  }
}

// Q6_K: 16 sub-blocks of 16 with int8 scales of the super-block's d; values q - 32, q in 0..63.
void quant_q6_k(const float* x, uint8_t* b, int64_t blocks) {
  for (int64_t i = 0; i < blocks; ++i, x += 256, b += 210) {
    float scale[16], max_scale = 0;
    for (int s = 0; s < 16; ++s) {
      float amax = 0, max = 0;  // the value of largest magnitude, with its sign
      for (int l = 0; l < 16; ++l)
        if (std::fabs(x[16 * s + l]) > amax) amax = std::fabs(x[16 * s + l]), max = x[16 * s + l];
      scale[s] = max / -32.0f;  // -32 * scale = max: the full negative range is used
      if (std::fabs(scale[s]) > std::fabs(max_scale)) max_scale = scale[s];
    }
    const float d = max_scale / -128.0f;
    put_half(b + 208, d);
    const float d_eff = half(b + 208);
    auto* sc = reinterpret_cast<int8_t*>(b + 192);
    uint8_t q[256];
    for (int s = 0; s < 16; ++s) {
      sc[s] = int8_t(std::clamp(d_eff != 0 ? int(std::lround(scale[s] / d_eff)) : 0, -128, 127));
      const float step = d_eff * float(sc[s]);
      for (int l = 0; l < 16; ++l) {
        const float v = step != 0 ? x[16 * s + l] / step : 0.0f;
        q[16 * s + l] = uint8_t(std::clamp(int(std::lround(v)), -32, 31) + 32);
      }
    }
    uint8_t* ql = b;
    uint8_t* qh = b + 128;
    for (int h = 0; h < 2; ++h, ql += 64, qh += 32)
      for (int l = 0; l < 32; ++l) {
        const uint8_t* v = q + 128 * h;
        ql[l] = uint8_t((v[l] & 0x0F) | ((v[l + 64] & 0x0F) << 4));
        ql[l + 32] = uint8_t((v[l + 32] & 0x0F) | ((v[l + 96] & 0x0F) << 4));
        qh[l] = uint8_t((v[l] >> 4) | ((v[l + 32] >> 4) << 2) | ((v[l + 64] >> 4) << 4) |
                        ((v[l + 96] >> 4) << 6));
      }
  }
}

int64_t blocks_of(GgmlType t, int64_t n) {
  const auto traits = ggml_type_traits(uint32_t(t));
  SY_ASSERT_MSG(traits && n % traits->block == 0, "a row length not a multiple of the block");
  return n / traits->block;
}

}  // namespace

void scale_min_k4(int j, const uint8_t* q, uint8_t& sc, uint8_t& m) {
  if (j < 4) {
    sc = q[j] & 63;
    m = q[j + 4] & 63;
  } else {
    sc = uint8_t((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4));
    m = uint8_t((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

bool can_dequantize(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
    case GgmlType::F16:
    case GgmlType::BF16:
    case GgmlType::Q8_0:
    case GgmlType::Q4_0:
    case GgmlType::Q4_K:
    case GgmlType::Q6_K:
    case GgmlType::MXFP4:
      return true;
    default:
      return false;
  }
}

void dequantize_row(GgmlType t, const void* src, float* dst, int64_t n) {
  if (n == 0) return;  // an empty tensor: dst may be null
  const auto* b = static_cast<const uint8_t*>(src);
  const int64_t blocks = blocks_of(t, n);
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case GgmlType::F16:
      return to_f32(DType::F16, src, dst, size_t(n));
    case GgmlType::BF16:
      return to_f32(DType::BF16, src, dst, size_t(n));
    case GgmlType::Q8_0:
      return dequant_q8_0(b, dst, blocks);
    case GgmlType::Q4_0:
      return dequant_q4_0(b, dst, blocks);
    case GgmlType::Q4_K:
      return dequant_q4_k(b, dst, blocks);
    case GgmlType::Q6_K:
      return dequant_q6_k(b, dst, blocks);
    case GgmlType::MXFP4:
      return dequant_mxfp4(b, dst, blocks);
    default:
      fail("Switchyard cannot dequantize ggml type {} yet", ggml_type_name(t));
  }
}

GgmlType ggml_block_type(DType t) {
  switch (t) {
    case DType::Q8_0:
      return GgmlType::Q8_0;
    case DType::Q4_0:
      return GgmlType::Q4_0;
    case DType::Q4_K:
      return GgmlType::Q4_K;
    case DType::Q6_K:
      return GgmlType::Q6_K;
    case DType::MXFP4:
      return GgmlType::MXFP4;
    default:
      SY_ASSERT_MSG(false, "ggml_block_type: not a block type");
      return GgmlType::F32;
  }
}

bool can_quantize(GgmlType t) {
  return t == GgmlType::F32 || t == GgmlType::F16 || t == GgmlType::BF16 || t == GgmlType::Q8_0 ||
         t == GgmlType::Q4_0 || t == GgmlType::Q4_K || t == GgmlType::Q6_K || t == GgmlType::MXFP4;
}

void quantize_row(GgmlType t, const float* src, void* dst, int64_t n) {
  if (n == 0) return;
  auto* b = static_cast<uint8_t*>(dst);
  const int64_t blocks = blocks_of(t, n);
  switch (t) {
    case GgmlType::F32:
      std::memcpy(dst, src, size_t(n) * 4);
      return;
    case GgmlType::F16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_f16(src[i]);
        std::memcpy(b + 2 * i, &h, 2);
      }
      return;
    case GgmlType::BF16:
      for (int64_t i = 0; i < n; ++i) {
        const uint16_t h = f32_to_bf16(src[i]);
        std::memcpy(b + 2 * i, &h, 2);
      }
      return;
    case GgmlType::Q8_0:
      return quant_q8_0(src, b, blocks);
    case GgmlType::Q4_0:
      return quant_q4_0(src, b, blocks);
    case GgmlType::Q4_K:
      return quant_q4_k(src, b, blocks);
    case GgmlType::Q6_K:
      return quant_q6_k(src, b, blocks);
    case GgmlType::MXFP4:
      return quant_mxfp4(src, b, blocks);
    default:
      fail("Switchyard cannot quantize to ggml type {} yet", ggml_type_name(t));
  }
}

}  // namespace sy
