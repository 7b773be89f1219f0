// AVX-512 VNNI kernels of gemv_int8.h. vpdpbusd multiplies unsigned by signed bytes, so each
// format puts its unsigned operand first and folds the offset into the int32 start value:
//   Q8_0: (a + 128) * w summed, started at -128 * sum(w)    -> sum(a * w)
//   Q4_0: q * a summed (q = nibble, 0..15), started at -8 * sum(a)   -> sum((q - 8) * a)
//   Q6_K: q * a summed (q = 6 bits, 0..63), started at -32 * sum(a)  -> sum((q - 32) * a)
//   Q4_K: q * a summed; its min term dmin * m * sum(a) is subtracted in float
//   MXFP4: (v + 12) * a summed (v = doubled E2M1 value, -12..12, by a vpshufb table lookup),
//          started at -12 * sum(a)                           -> sum(v * a)
// Each zmm holds 64 weights (int32 lanes 0-7 the first 32, 8-15 the next 32); the lanes' sums
// are converted to float and scaled lane-wise by the weight scale times the activation scale.
#include "ops/vnni_target.h"  // first: the warning pragmas precede <immintrin.h>

#include "ops/gemv_int8.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <type_traits>

#include "util/dtype.h"
#include "util/error.h"

namespace sy::ops::detail {

namespace {

bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}

SY_VNNI inline float Half(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return _cvtsh_ss(h);
}

SY_VNNI inline __m512 TwoScales(float lo, float hi) {  // lanes 0-7 lo, 8-15 hi
  return _mm512_mask_broadcastss_ps(_mm512_set1_ps(lo), __mmask16(0xFF00), _mm_set_ss(hi));
}

// The f16 scales at s0 and s1 (s1 null: 0) as lanes 0-7 and 8-15: one conversion and one
// permute, fewer shuffle-port operations than two scalar conversions and broadcasts.
SY_VNNI inline __m512 ScalePair(const uint8_t* s0, const uint8_t* s1) {
  uint16_t h0, h1 = 0;
  std::memcpy(&h0, s0, 2);
  if (s1) std::memcpy(&h1, s1, 2);
  const __m128 d = _mm_cvtph_ps(_mm_cvtsi32_si128(int(uint32_t(h0) | (uint32_t(h1) << 16))));
  const __m512i spread = _mm512_set_epi32(1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0);
  return _mm512_permutexvar_ps(spread, _mm512_castps128_ps512(d));
}

SY_VNNI inline __m512i Join(__m256i lo, __m256i hi) {
  return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
}

// 64 weights of a row ("pair" p: values 64p .. 64p + 63) as bytes, with per-lane scales.
struct Pair {
  __m512i w;
  __m512 scale;  // the weight scale of each int32 lane's 4 values
  __m512 min;    // Q4_K: dmin * m of each lane's sub-block
};

struct Q8Format {                    // {f16 d, i8 q[32]}: signed weights
  static constexpr int kOffset = 0;  // (uses the a + 128 form instead)
  static constexpr bool kMin = false;
  struct Cache {};
  SY_VNNI static Pair Load(const uint8_t* row, size_t p, size_t blocks, Cache&) {
    const uint8_t* b0 = row + 2 * p * 34;
    const bool two = 2 * p + 1 < blocks;
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2));
    const __m256i hi = two ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 36))
                           : _mm256_setzero_si256();
    return {Join(lo, hi), ScalePair(b0, two ? b0 + 34 : nullptr), _mm512_setzero_ps()};
  }
  static const uint8_t* Prefetch(const uint8_t* row, size_t p) { return row + p * 68 + 1024; }
};

// The 4-bit codes of two 32-value blocks (16 bytes each at q0 and q1; q1 null: zeros) as
// bytes in block order: block 0's values 0-31, then block 1's (low nibble j is value j, high
// nibble j value 16 + j).
SY_VNNI inline __m512i TwoBlockNibbles(const uint8_t* q0, const uint8_t* q1) {
  const __m128i a = _mm_loadu_si128(reinterpret_cast<const __m128i*>(q0));
  const __m128i b =
      q1 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(q1)) : _mm_setzero_si128();
  const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(a), b, 1);
  const __m512i z = _mm512_and_si512(Join(both, _mm256_srli_epi16(both, 4)),
                                     _mm512_set1_epi8(0x0F));  // lo0 lo1 hi0 hi1
  return _mm512_shuffle_i64x2(z, z, _MM_SHUFFLE(3, 1, 2, 0));  // lo0 hi0 lo1 hi1
}

struct Q4Format {  // {f16 d, u8 q[16]}: value j = low nibble of q[j], 16 + j its high nibble
  static constexpr int kOffset = -8;
  static constexpr bool kMin = false;
  struct Cache {};
  SY_VNNI static Pair Load(const uint8_t* row, size_t p, size_t blocks, Cache&) {
    const uint8_t* b0 = row + 2 * p * 18;
    const bool two = 2 * p + 1 < blocks;
    return {TwoBlockNibbles(b0 + 2, two ? b0 + 20 : nullptr),
            ScalePair(b0, two ? b0 + 18 : nullptr), _mm512_setzero_ps()};
  }
  static const uint8_t* Prefetch(const uint8_t* row, size_t p) { return row + p * 36 + 1024; }
};

// MXFP4: {u8 e (E8M0), u8 q[16]}, the nibble layout of Q4_0; each code becomes its doubled
// E2M1 value + 12 (0..24) through a byte table, and the scale is 2^(e - 128).
struct Mxfp4Format {
  static constexpr int kOffset = -12;
  static constexpr bool kMin = false;
  struct Cache {};
  SY_VNNI static float Scale(uint8_t e) {  // ggml's e8m0_to_fp32_half, subnormals included
    const uint32_t bits = e < 2 ? uint32_t(0x00200000) << e : uint32_t(e - 1) << 23;
    float f;
    std::memcpy(&f, &bits, 4);
    return f;
  }
  SY_VNNI static Pair Load(const uint8_t* row, size_t p, size_t blocks, Cache&) {
    const uint8_t* b0 = row + 2 * p * 17;
    const bool two = 2 * p + 1 < blocks;
    const __m512i table = _mm512_broadcast_i32x4(
        _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
    // A byte-wise lookup: the same before or after the blocks are put in order. A missing
    // second block has codes 0 (value 0 + 12): its scale 0 cancels it.
    return {_mm512_shuffle_epi8(table, TwoBlockNibbles(b0 + 1, two ? b0 + 18 : nullptr)),
            TwoScales(Scale(b0[0]), two ? Scale(b0[17]) : 0.0f), _mm512_setzero_ps()};
  }
  static const uint8_t* Prefetch(const uint8_t* row, size_t p) { return row + p * 34 + 1024; }
};

// Q4_K: 256 values {f16 d, f16 dmin, 12 bytes of 6-bit scales / mins, u8 qs[128]}; pair g of a
// super-block is qs[32g .. 32g + 31]: low nibbles sub-block 2g, high nibbles 2g + 1. The
// super-block's 8 scales and mins are unpacked once (Cache) and serve its 4 pairs.
struct Q4KFormat {
  static constexpr int kOffset = 0;
  static constexpr bool kMin = true;
  struct Cache {
    size_t block = SIZE_MAX;
    float scale[8], min[8];  // d * sc, dmin * m
  };
  SY_VNNI static void Unpack(const uint8_t* blk, Cache& c) {
    const float d = Half(blk), dmin = Half(blk + 2);
    const uint8_t* q = blk + 4;  // ggml's get_scale_min_k4
    for (int j = 0; j < 4; ++j) {
      c.scale[j] = d * float(q[j] & 63);
      c.min[j] = dmin * float(q[j + 4] & 63);
      c.scale[j + 4] = d * float((q[j + 8] & 0x0F) | ((q[j] >> 6) << 4));
      c.min[j + 4] = dmin * float((q[j + 8] >> 4) | ((q[j + 4] >> 6) << 4));
    }
  }
  SY_VNNI static Pair Load(const uint8_t* row, size_t p, size_t /*blocks*/, Cache& c) {
    const uint8_t* blk = row + (p / 4) * 144;
    if (c.block != p / 4) {
      Unpack(blk, c);
      c.block = p / 4;
    }
    const int g = int(p % 4);
    const __m256i q = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 16 + 32 * g));
    const __m512i w = _mm512_and_si512(Join(q, _mm256_srli_epi16(q, 4)), _mm512_set1_epi8(0x0F));
    return {w, TwoScales(c.scale[2 * g], c.scale[2 * g + 1]),
            TwoScales(c.min[2 * g], c.min[2 * g + 1])};
  }
  // 36 bytes per pair: every cache line of the row is touched ~1 KiB ahead.
  static const uint8_t* Prefetch(const uint8_t* row, size_t p) { return row + p * 36 + 1024; }
};

// Bits shift and shift + 1 of each byte of qh, moved to bits 4-5.
SY_VNNI inline __m256i Top(__m256i qh, int shift) {
  return _mm256_slli_epi16(
      _mm256_and_si256(_mm256_srl_epi16(qh, _mm_cvtsi32_si128(shift)), _mm256_set1_epi8(3)), 4);
}

struct Q6KFormat {
  static constexpr int kOffset = -32;
  static constexpr bool kMin = false;
  struct Cache {};
  SY_VNNI static Pair Load(const uint8_t* row, size_t p, size_t /*blocks*/, Cache&) {
    const uint8_t* blk = row + (p / 4) * 210;
    const int h = int(p % 4) / 2, k = int(p % 2);
    const uint8_t* ql = blk + 64 * h;
    const uint8_t* qh = blk + 128 + 32 * h;
    const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql));
    const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(ql + 32));
    const __m256i hb = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(qh));
    const __m256i m4 = _mm256_set1_epi8(0x0F);
    __m256i lo, hi;
    if (k == 0) {
      lo = _mm256_or_si256(_mm256_and_si256(l0, m4), Top(hb, 0));
      hi = _mm256_or_si256(_mm256_and_si256(l1, m4), Top(hb, 2));
    } else {
      lo = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l0, 4), m4), Top(hb, 4));
      hi = _mm256_or_si256(_mm256_and_si256(_mm256_srli_epi16(l1, 4), m4), Top(hb, 6));
    }
    // Scales 8h + 4k .. 8h + 4k + 3, each for 4 int32 lanes (16 values).
    int32_t s4;
    std::memcpy(&s4, blk + 192 + 8 * h + 4 * k, 4);
    const __m128 sc = _mm_cvtepi32_ps(_mm_cvtepi8_epi32(_mm_cvtsi32_si128(s4)));
    const __m512i spread = _mm512_set_epi32(3, 3, 3, 3, 2, 2, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0);
    const __m512 scale = _mm512_mul_ps(_mm512_permutexvar_ps(spread, _mm512_castps128_ps512(sc)),
                                       _mm512_set1_ps(Half(blk + 208)));
    return {Join(lo, hi), scale, _mm512_setzero_ps()};
  }
  static const uint8_t* Prefetch(const uint8_t* row, size_t p) { return row + p * 52 + 1024; }
};

// R weight rows times NX activation rows (from row j0 of `a`).
template <class F, int R, int NX>
SY_VNNI void DotBlock(const uint8_t* w, size_t row_bytes, size_t blocks, const Int8Activations& a,
                      int64_t j0, float* y, size_t ldy) {
  constexpr bool kQ8 = std::is_same_v<F, Q8Format>;
  const size_t padded = size_t(a.padded), pairs = (blocks + 1) / 2;
  __m512 acc[R][NX];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) acc[r][j] = _mm512_setzero_ps();
  const __m512i k128 = _mm512_set1_epi8(char(0x80));
  typename F::Cache cache[R];
  for (size_t p = 0; p < pairs; ++p) {
    Pair wp[R];
    __m512i start[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* row = w + size_t(r) * row_bytes;
      __builtin_prefetch(F::Prefetch(row, p), 0, 2);
      wp[r] = F::Load(row, p, blocks, cache[r]);
      if constexpr (kQ8)
        start[r] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), k128, wp[r].w));
    }
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) {
      const size_t row = size_t(j0 + j);
      const __m512i av = _mm512_loadu_si512(a.q.data() + row * padded + p * 64);
      const __m512 da = _mm512_loadu_ps(a.scale.data() + row * (padded / 4) + p * 16);
      __m512i base = _mm512_setzero_si512();
      __m512 sum_a = _mm512_setzero_ps();
      if constexpr (!kQ8) {
        const __m512i s = _mm512_loadu_si512(a.lane_sum.data() + row * (padded / 4) + p * 16);
        if constexpr (F::kOffset != 0) base = _mm512_mullo_epi32(s, _mm512_set1_epi32(F::kOffset));
        if constexpr (F::kMin) sum_a = _mm512_mul_ps(_mm512_cvtepi32_ps(s), da);
      }
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i t = kQ8 ? _mm512_dpbusd_epi32(start[r], av, wp[r].w)
                              : _mm512_dpbusd_epi32(base, wp[r].w, av);
        acc[r][j] =
            _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(wp[r].scale, da), acc[r][j]);
        if constexpr (F::kMin) acc[r][j] = _mm512_fnmadd_ps(wp[r].min, sum_a, acc[r][j]);
      }
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) y[size_t(j) * ldy + size_t(r)] = _mm512_reduce_add_ps(acc[r][j]);
}

template <class F, int R>
SY_VNNI void DotRows(const uint8_t* w, size_t row_bytes, size_t blocks, const Int8Activations& a,
                     float* y, size_t ldy) {
  int64_t j = 0;
  for (; j + 4 <= a.n; j += 4)
    DotBlock<F, R, 4>(w, row_bytes, blocks, a, j, y + size_t(j) * ldy, ldy);
  switch (a.n - j) {
    case 3:
      DotBlock<F, R, 3>(w, row_bytes, blocks, a, j, y + size_t(j) * ldy, ldy);
      break;
    case 2:
      DotBlock<F, R, 2>(w, row_bytes, blocks, a, j, y + size_t(j) * ldy, ldy);
      break;
    case 1:
      DotBlock<F, R, 1>(w, row_bytes, blocks, a, j, y + size_t(j) * ldy, ldy);
      break;
    default:
      break;
  }
}

template <class F>
SY_VNNI void GemvRows(const WeightView& wv, int64_t row_begin, int64_t row_end,
                      const Int8Activations& a, float* y, size_t ldy) {
  const auto* w = static_cast<const uint8_t*>(wv.data);
  const size_t row_bytes = wv.row_bytes(), blocks = size_t(wv.cols) / 32;
  // 4 weight rows: 4 DRAM streams, and with 4 activation rows 16 accumulators.
  constexpr int R = 4;
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R)
    DotRows<F, R>(w + size_t(r) * row_bytes, row_bytes, blocks, a, y + r, ldy);
  for (; r < row_end; ++r)
    DotRows<F, 1>(w + size_t(r) * row_bytes, row_bytes, blocks, a, y + r, ldy);
}

// ggml's nearest_int: round half to even (as its float-magic trick does).
int NearestInt(float v) {
  return int(std::nearbyint(v));
}

}  // namespace

bool int8_dot_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SY_INT8_DOT");
    if (env && std::strcmp(env, "0") == 0) return false;
    return cpu_has_vnni();
  }();
  return enabled;
}

void quantize_activations(DType wtype, const float* x, int64_t n, int64_t ldx, int64_t cols,
                          Int8Activations* a, bool packed) {
  SY_ASSERT(is_block_type(wtype) && cols % dtype_block(wtype) == 0 && n >= 0);
  a->n = n;
  a->cols = cols;
  a->padded = (cols + 63) / 64 * 64;
  a->unsigned_q = wtype == DType::Q8_0 && !packed;
  const bool k_quant = dtype_block(wtype) == 256;
  const size_t padded = size_t(a->padded), lanes = padded / 4;
  a->q.assign(size_t(n) * padded, a->unsigned_q ? 128 : 0);
  a->scale.assign(size_t(n) * lanes, 0.0f);
  a->lane_sum.assign(a->unsigned_q ? 0 : size_t(n) * lanes, 0);
  a->block_sum.assign(packed ? size_t(n) * (padded / 32) : 0, 0);
  a->sub16_sum.assign(packed && wtype == DType::Q6_K ? size_t(n) * (padded / 16) : 0, 0);
  const int64_t span = k_quant ? 256 : 32;
  for (int64_t j = 0; j < n; ++j) {
    const float* xr = x + j * ldx;
    uint8_t* qr = a->q.data() + size_t(j) * padded;
    float* sr = a->scale.data() + size_t(j) * lanes;
    for (int64_t b = 0; b < cols / span; ++b) {
      const float* xb = xr + b * span;
      float d;
      if (k_quant) {  // ggml's block_q8_K: float d = max / -127 of the signed largest value
        float amax = 0, max = 0;
        for (int64_t k = 0; k < span; ++k)
          if (std::abs(xb[k]) > amax) amax = std::abs(xb[k]), max = xb[k];
        const float iscale = amax != 0 ? -127.0f / max : 0.0f;
        for (int64_t k = 0; k < span; ++k)
          qr[b * span + k] = uint8_t(int8_t(std::min(127, NearestInt(iscale * xb[k]))));
        d = iscale != 0 ? 1.0f / iscale : 0.0f;
      } else {  // ggml's block_q8_0: d = max|x| / 127, kept as f16
        // As llama.cpp's x86 quantize_row_q8_0 (its AVX / AVX-512 path, what it runs on these
        // CPUs): the inverse scale is 127 / max, not 1 / d, and x * id rounds to nearest even.
        // ggml's scalar reference (1 / d, roundf's ties away) moves some codes by one, and
        // through near-tied routing that made Q8_0 / Q4_0 logits differ from llama.cpp's by ~1%.
        float amax = 0;
        for (int64_t k = 0; k < span; ++k) amax = std::max(amax, std::abs(xb[k]));
        const float dq = amax / 127.0f, id = amax != 0.0f ? 127.0f / amax : 0.0f;
        for (int64_t k = 0; k < span; ++k) {
          const int q = int(std::nearbyint(xb[k] * id));
          qr[b * span + k] = a->unsigned_q ? uint8_t(q + 128) : uint8_t(int8_t(q));
        }
        d = f16_to_f32(f32_to_f16(dq));
      }
      std::fill_n(sr + b * span / 4, span / 4, d);
    }
    if (!a->unsigned_q)
      for (size_t lane = 0; lane < lanes; ++lane) {
        int s = 0;
        for (int k = 0; k < 4; ++k) s += int8_t(qr[lane * 4 + k]);
        a->lane_sum[size_t(j) * lanes + lane] = s;
        if (packed) a->block_sum[size_t(j) * (padded / 32) + lane / 8] += s;
        if (!a->sub16_sum.empty()) a->sub16_sum[size_t(j) * (padded / 16) + lane / 4] += s;
      }
  }
}

void gemv_rows_int8(const WeightView& w, int64_t row_begin, int64_t row_end,
                    const Int8Activations& a, float* y, int64_t ldy) {
  SY_ASSERT(int8_dot_enabled() && a.cols == w.cols);
  SY_ASSERT(a.unsigned_q == (w.dtype == DType::Q8_0));
  switch (w.dtype) {
    case DType::Q8_0:
      return GemvRows<Q8Format>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::Q4_0:
      return GemvRows<Q4Format>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::Q4_K:
      return GemvRows<Q4KFormat>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::Q6_K:
      return GemvRows<Q6KFormat>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::MXFP4:
      return GemvRows<Mxfp4Format>(w, row_begin, row_end, a, y, size_t(ldy));
    default:
      SY_ASSERT_MSG(false, "gemv_rows_int8: not a block type");
  }
}

}  // namespace sy::ops::detail
