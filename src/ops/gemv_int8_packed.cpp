// The int8 kernel on repacked weights (ops/repack.h): one int32 lane per weight row, 16 rows
// per register. Per block of 32 values and 16 rows: 8 vpdpbusd against broadcast 4-byte
// pieces of the activations (started at offset * the block's activation sum, so that the
// unsigned codes' offset cancels: Q8_0 stores q + 128, Q4_0 its nibbles 0..15 for q + 8), one
// f16 conversion for the 16 rows' scales and one multiply-add into float.
// GCC 12 flags the intrinsics' own _mm512_undefined_* placeholders as uninitialized (a false
// positive in its headers, as in gemv_int8.cpp).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ops/gemv_int8.h"
#include "ops/repack.h"
#include "util/error.h"

namespace sy::ops::detail {

namespace {

#define SY_VNNI __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512vnni,f16c")))

constexpr size_t kPrefetchBytes = 8192;

SY_VNNI inline __m512i Broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// One group of 16 weight rows against NX activation rows from j0; writes `valid` rows of y.
template <bool kQ8, int NX>
SY_VNNI void Group(const uint8_t* group, size_t blocks, const Int8Activations& a, int64_t j0,
                   float* y, size_t ldy, int valid) {
  constexpr size_t kBlock = kQ8 ? 16 * 34 : 16 * 18;
  constexpr int kOffset = kQ8 ? -128 : -8;
  const size_t padded = size_t(a.padded), lanes = padded / 4, sums = padded / 32;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[NX];
#pragma GCC unroll 4
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * kBlock;
    // Every line of the stream, 8 KiB ahead. bench_kernels, medians of 3 rounds over the four
    // GEMV shapes, 1 and 2 threads, fraction of the probed read bandwidth: 81% without, 81% at
    // 2 KiB, 83% at 4 KiB, 86% at 8 KiB (this Zen 5 VM; the spread between rounds is ~10 points).
#pragma GCC unroll 9
    for (size_t line = 0; line < kBlock; line += 64)
      _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes + line), _MM_HINT_T0);
    // Piece i: the 16 rows' codes of values 4i .. 4i + 3 as unsigned bytes.
    __m512i w[8];
    if constexpr (kQ8) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) w[i] = _mm512_loadu_si512(blk + 32 + 64 * i);
    } else {
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m512i z = _mm512_loadu_si512(blk + 32 + 64 * i);
        w[i] = _mm512_and_si512(z, low);
        w[4 + i] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low);
      }
    }
    const __m512 scale = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) {
      const size_t row = size_t(j0 + j);
      const uint8_t* q = a.q.data() + row * padded + b * 32;
      // Two chains of 4: vpdpbusd's latency would otherwise bound one row's block.
      __m512i s0 = _mm512_set1_epi32(kOffset * a.block_sum[row * sums + b]);
      __m512i s1 = _mm512_setzero_si512();
#pragma GCC unroll 4
      for (int i = 0; i < 8; i += 2) {
        s0 = _mm512_dpbusd_epi32(s0, w[i], Broadcast4(q + 4 * i));
        s1 = _mm512_dpbusd_epi32(s1, w[i + 1], Broadcast4(q + 4 * i + 4));
      }
      const __m512 da = _mm512_set1_ps(a.scale[row * lanes + b * 8]);
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(_mm512_add_epi32(s0, s1)),
                               _mm512_mul_ps(scale, da), acc[j]);
    }
  }
  const __mmask16 keep = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
#pragma GCC unroll 4
  for (int j = 0; j < NX; ++j) _mm512_mask_storeu_ps(y + size_t(j) * ldy, keep, acc[j]);
}

template <bool kQ8>
SY_VNNI void Rows(const WeightView& w, int64_t row_begin, int64_t row_end, const Int8Activations& a,
                  float* y, size_t ldy) {
  const size_t blocks = size_t(w.cols / 32), group_bytes = packed_group_bytes(w.dtype, w.cols);
  const auto* packed = static_cast<const uint8_t*>(w.packed);
  for (int64_t r = row_begin; r < row_end; r += kPackRows) {
    const uint8_t* group = packed + size_t(r / kPackRows) * group_bytes;
    const int valid = int(std::min<int64_t>(kPackRows, row_end - r));
    float* yr = y + r;
    int64_t j = 0;
    for (; j + 4 <= a.n; j += 4)
      Group<kQ8, 4>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
    switch (a.n - j) {
      case 3:
        Group<kQ8, 3>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
        break;
      case 2:
        Group<kQ8, 2>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
        break;
      case 1:
        Group<kQ8, 1>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
        break;
      default:
        break;
    }
  }
}

}  // namespace

void gemv_rows_int8_packed(const WeightView& w, int64_t row_begin, int64_t row_end,
                           const Int8Activations& a, float* y, int64_t ldy) {
  SY_ASSERT(int8_dot_enabled() && w.packed != nullptr && packable(w.dtype));
  SY_ASSERT(a.cols == w.cols && !a.unsigned_q && row_begin % kPackRows == 0);
  SY_ASSERT(int64_t(a.block_sum.size()) == a.n * (a.padded / 32));
  if (w.dtype == DType::Q8_0) return Rows<true>(w, row_begin, row_end, a, y, size_t(ldy));
  Rows<false>(w, row_begin, row_end, a, y, size_t(ldy));
}

}  // namespace sy::ops::detail
