// AVX-512 VNNI kernels of gemv_int8.h. vpdpbusd multiplies unsigned by signed bytes, so each
// format puts its unsigned operand first and folds the offset into the int32 start value:
//   Q8_0: (a + 128) * w summed, started at -128 * sum(w)  -> sum(a * w)
//   Q4_0: q * a summed (q = nibble, 0..15), started at -8 * sum(a)  -> sum((q - 8) * a)
// Each zmm holds two blocks (int32 lanes 0-7 the first, 8-15 the second); their sums are
// converted to float and scaled by d_w * d_a lane-wise.
#include "ops/gemv_int8.h"

// GCC 12 flags the intrinsics' own _mm512_undefined_* placeholders (inside reduce / insert /
// convert) as uninitialized: a false positive in its headers.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>

#include "util/dtype.h"
#include "util/error.h"

namespace sy::ops::detail {

namespace {

#define SY_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c")))

bool cpu_has_vnni() {
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
         __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
         __builtin_cpu_supports("avx512vnni");
}

struct Q8Format {
  static constexpr size_t kBytes = 34;  // {f16 d, i8 q[32]}
  // Blocks b0 and b1 (b1 may be absent: zeros) as 64 signed bytes.
  SY_VNNI static __m512i Load(const uint8_t* b0, const uint8_t* b1) {
    const __m256i lo = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b0 + 2));
    const __m256i hi =
        b1 ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(b1 + 2)) : _mm256_setzero_si256();
    return _mm512_inserti64x4(_mm512_castsi256_si512(lo), hi, 1);
  }
};

struct Q4Format {
  static constexpr size_t kBytes = 18;  // {f16 d, u8 q[16]}: value j = low nibble of q[j],
                                        // value 16 + j = its high nibble
  // Blocks b0 and b1 as 64 unsigned nibbles, each block's values in order.
  SY_VNNI static __m512i Load(const uint8_t* b0, const uint8_t* b1) {
    const __m128i q0 = _mm_loadu_si128(reinterpret_cast<const __m128i*>(b0 + 2));
    const __m128i q1 =
        b1 ? _mm_loadu_si128(reinterpret_cast<const __m128i*>(b1 + 2)) : _mm_setzero_si128();
    const __m256i both = _mm256_inserti128_si256(_mm256_castsi128_si256(q0), q1, 1);
    const __m512i z = _mm512_inserti64x4(_mm512_castsi256_si512(both), _mm256_srli_epi16(both, 4),
                                         1);  // lo0 lo1 hi0 hi1
    const __m512i nibbles = _mm512_and_si512(z, _mm512_set1_epi8(0x0F));
    return _mm512_shuffle_i64x2(nibbles, nibbles, _MM_SHUFFLE(3, 1, 2, 0));  // lo0 hi0 lo1 hi1
  }
};

SY_VNNI inline float Half(const uint8_t* blk) {
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return _cvtsh_ss(h);
}

// R weight rows times NX activation rows (from row j0 of `a`).
template <class F, int R, int NX>
SY_VNNI void DotBlock(const uint8_t* w, size_t row_bytes, size_t blocks, const Int8Activations& a,
                      int64_t j0, float* y, size_t ldy) {
  constexpr bool kQ8 = std::is_same_v<F, Q8Format>;
  const size_t padded = size_t(a.padded);
  __m512 acc[R][NX];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) acc[r][j] = _mm512_setzero_ps();
  const __m512i k128 = _mm512_set1_epi8(char(0x80));
  for (size_t b = 0; b < blocks; b += 2) {
    const bool pair = b + 1 < blocks;
    __m512i wv[R], start[R];
    __m512 dw[R];
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const uint8_t* b0 = w + size_t(r) * row_bytes + b * F::kBytes;
      const uint8_t* b1 = pair ? b0 + F::kBytes : nullptr;
      if (kQ8 || b % 4 == 0) __builtin_prefetch(b0 + 16 * F::kBytes, 0, 2);
      wv[r] = F::Load(b0, b1);
      dw[r] = _mm512_mask_broadcastss_ps(_mm512_set1_ps(Half(b0)), __mmask16(0xFF00),
                                         _mm_set_ss(pair ? Half(b1) : 0.0f));
      if constexpr (kQ8)
        start[r] = _mm512_sub_epi32(_mm512_setzero_si512(),
                                    _mm512_dpbusd_epi32(_mm512_setzero_si512(), k128, wv[r]));
    }
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) {
      const size_t row = size_t(j0 + j);
      const __m512i av = _mm512_loadu_si512(a.q.data() + row * padded + b * 32);
      const __m512 da = _mm512_loadu_ps(a.scale.data() + row * (padded / 4) + b * 8);
      __m512i base_j = _mm512_setzero_si512();
      if constexpr (!kQ8) base_j = _mm512_loadu_si512(a.base.data() + row * (padded / 4) + b * 8);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const __m512i t =
            kQ8 ? _mm512_dpbusd_epi32(start[r], av, wv[r]) : _mm512_dpbusd_epi32(base_j, wv[r], av);
        acc[r][j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(t), _mm512_mul_ps(dw[r], da), acc[r][j]);
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
                          Int8Activations* a) {
  SY_ASSERT(is_block_type(wtype) && cols % 32 == 0 && n >= 0);
  a->n = n;
  a->cols = cols;
  a->padded = (cols + 63) / 64 * 64;
  a->unsigned_q = wtype == DType::Q8_0;
  const size_t padded = size_t(a->padded);
  a->q.assign(size_t(n) * padded, a->unsigned_q ? 128 : 0);
  a->scale.assign(size_t(n) * padded / 4, 0.0f);
  a->base.assign(a->unsigned_q ? 0 : size_t(n) * padded / 4, 0);
  for (int64_t j = 0; j < n; ++j) {
    const float* xr = x + j * ldx;
    uint8_t* qr = a->q.data() + size_t(j) * padded;
    for (int64_t b = 0; b < cols / 32; ++b) {
      float amax = 0;
      for (int k = 0; k < 32; ++k) amax = std::max(amax, std::abs(xr[b * 32 + k]));
      const float d = amax / 127.0f, id = d != 0.0f ? 1.0f / d : 0.0f;
      for (int k = 0; k < 32; ++k) {
        const int q = int(std::lround(xr[b * 32 + k] * id));
        qr[b * 32 + k] = a->unsigned_q ? uint8_t(q + 128) : uint8_t(int8_t(q));
      }
      // The scale as ggml's block_q8_0 stores it (f16), so sums match llama.cpp's.
      std::fill_n(a->scale.data() + size_t(j) * padded / 4 + size_t(b) * 8, 8,
                  f16_to_f32(f32_to_f16(d)));
    }
    if (!a->unsigned_q)
      for (size_t lane = 0; lane < padded / 4; ++lane) {
        int s = 0;
        for (int k = 0; k < 4; ++k) s += int8_t(qr[lane * 4 + k]);
        a->base[size_t(j) * padded / 4 + lane] = -8 * s;
      }
  }
}

void gemv_rows_int8(const WeightView& w, int64_t row_begin, int64_t row_end,
                    const Int8Activations& a, float* y, int64_t ldy) {
  SY_ASSERT(int8_dot_enabled() && a.cols == w.cols);
  SY_ASSERT(a.unsigned_q == (w.dtype == DType::Q8_0));
  if (w.dtype == DType::Q8_0)
    GemvRows<Q8Format>(w, row_begin, row_end, a, y, size_t(ldy));
  else
    GemvRows<Q4Format>(w, row_begin, row_end, a, y, size_t(ldy));
}

}  // namespace sy::ops::detail
