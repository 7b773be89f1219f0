// The int8 kernels on repacked weights (ops/repack.h): one int32 lane per weight row, 16 rows
// per register, so the sums need no horizontal reduction and one conversion yields 16 rows'
// scales. vpdpbusd multiplies the unsigned codes by broadcast 4-byte pieces of the signed
// activations:
//   Q8_0 / Q4_0 / MXFP4, per block of 32 values and 16 rows: 8 vpdpbusd started at offset *
//     the block's activation sum (Q8_0 stores q + 128, Q4_0 q + 8 as its nibble, MXFP4's
//     nibbles become the doubled E2M1 value + 12 through a byte table), one conversion for the
//     scales (f16, or E8M0 halved), one multiply-add into float;
//   Q4_K, per 256 values: 64 vpdpbusd, each sub-block's int32 sums times its 6-bit scales and
//     its mins times the sub-block's activation sums in int32 (no overflow: |sum| < 2^26),
//     then d and dmin once in float;
//   Q6_K, per 256 values: the codes rebuilt from a nibble and a 2-bit piece, 64 vpdpbusd,
//     each 16-value sub-block's sum times its int8 scale in int32, then d in float.
#include "ops/vnni_target.h"  // first: the warning pragmas precede <immintrin.h>

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "ops/gemv_int8.h"
#include "ops/repack.h"
#include "util/error.h"

namespace sy::ops::detail {

namespace {

// Every line of the stream is prefetched 8 KiB ahead. bench_kernels, Q8_0 / Q4_0, medians of 3
// rounds over the four GEMV shapes, 1 and 2 threads, fraction of the probed read bandwidth: 81%
// without, 81% at 2 KiB, 83% at 4 KiB, 86% at 8 KiB (this Zen 5 VM; the spread between rounds
// is ~10 points).
constexpr size_t kPrefetchBytes = 8192;

// Every line of a group's block, kPrefetchBytes ahead.
template <size_t kBlock>
inline void PrefetchAhead(const uint8_t* blk) {
#pragma GCC unroll 64
  for (size_t off = 0; off < kBlock; off += 64)
    _mm_prefetch(reinterpret_cast<const char*>(blk + kPrefetchBytes + off), _MM_HINT_T0);
}

// Rows [0, valid) of each activation row's 16 results.
template <int NX>
SY_VNNI inline void StoreRows(const __m512 (&acc)[NX], float* y, size_t ldy, int valid) {
  const __mmask16 keep = valid >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << valid) - 1);
#pragma GCC unroll 4
  for (int j = 0; j < NX; ++j) _mm512_mask_storeu_ps(y + size_t(j) * ldy, keep, acc[j]);
}

SY_VNNI inline __m512i Broadcast4(const uint8_t* p) {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm512_set1_epi32(v);
}

// One group of 16 weight rows against NX activation rows from j0; writes `valid` rows of y.
// 16 unsigned bytes as int32 lanes.
SY_VNNI inline __m512i Bytes16(const uint8_t* p) {
  return _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// 16 E8M0 scales as floats, as ggml's e8m0_to_fp32_half (2^(e - 128), subnormal below e = 2).
SY_VNNI inline __m512 E8m0Half(const uint8_t* p) {
  const __m512i e = Bytes16(p);
  const __m512i normal = _mm512_slli_epi32(_mm512_sub_epi32(e, _mm512_set1_epi32(1)), 23);
  const __m512i tiny = _mm512_sllv_epi32(_mm512_set1_epi32(0x00200000), e);
  return _mm512_castsi512_ps(
      _mm512_mask_blend_epi32(_mm512_cmplt_epu32_mask(e, _mm512_set1_epi32(2)), normal, tiny));
}

template <DType T, int NX>
SY_VNNI void Group(const uint8_t* group, size_t blocks, const Int8Activations& a, int64_t j0,
                   float* y, size_t ldy, int valid) {
  constexpr bool kQ8 = T == DType::Q8_0, kMx = T == DType::MXFP4;
  constexpr size_t kBlock = kQ8 ? 16 * 34 : kMx ? 16 * 17 : 16 * 18;
  constexpr size_t kCodes = kMx ? 16 : 32;  // the scales' bytes: E8M0 or f16
  // Q8_0: q + 128; Q4_0: q + 8; MXFP4: the doubled E2M1 value + 12 (a byte table lookup).
  constexpr int kOffset = kQ8 ? -128 : kMx ? -12 : -8;
  const __m512i table = _mm512_broadcast_i32x4(
      _mm_setr_epi8(12, 13, 14, 15, 16, 18, 20, 24, 12, 11, 10, 9, 8, 6, 4, 0));
  const size_t padded = size_t(a.padded), lanes = padded / 4, sums = padded / 32;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[NX];
#pragma GCC unroll 4
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * kBlock;
    PrefetchAhead<kBlock>(blk);
    // Piece i: the 16 rows' codes of values 4i .. 4i + 3 as unsigned bytes.
    __m512i w[8];
    if constexpr (kQ8) {
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) w[i] = _mm512_loadu_si512(blk + kCodes + 64 * i);
    } else {
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        const __m512i z = _mm512_loadu_si512(blk + kCodes + 64 * i);
        w[i] = _mm512_and_si512(z, low);
        w[4 + i] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low);
        if constexpr (kMx) {
          w[i] = _mm512_shuffle_epi8(table, w[i]);
          w[4 + i] = _mm512_shuffle_epi8(table, w[4 + i]);
        }
      }
    }
    const __m512 scale =
        kMx ? E8m0Half(blk)
            : _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
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
  StoreRows<NX>(acc, y, ldy, valid);
}

// One group of 16 Q4_K rows against NX activation rows from j0 (block_q8_K activations: one
// float scale per 256 values).
template <int NX>
SY_VNNI void GroupQ4K(const uint8_t* group, size_t blocks, const Int8Activations& a, int64_t j0,
                      float* y, size_t ldy, int valid) {
  constexpr size_t kBlock = 16 * 148;
  const size_t padded = size_t(a.padded), lanes = padded / 4, sums = padded / 32;
  const __m512i low = _mm512_set1_epi8(0x0F);
  __m512 acc[NX];
#pragma GCC unroll 4
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * kBlock;
    PrefetchAhead<kBlock>(blk);
    __m512i scaled[NX], mins[NX];
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) scaled[j] = mins[j] = _mm512_setzero_si512();
    for (int g = 0; g < 4; ++g) {
      const __m512i sc0 = Bytes16(blk + 64 + 32 * g), sc1 = Bytes16(blk + 80 + 32 * g);
      const __m512i m0 = Bytes16(blk + 192 + 32 * g), m1 = Bytes16(blk + 208 + 32 * g);
      __m512i lo[8], hi[8];  // sub-blocks 2g and 2g + 1, values 4i .. 4i + 3
#pragma GCC unroll 8
      for (int i = 0; i < 8; ++i) {
        const __m512i z = _mm512_loadu_si512(blk + 320 + 512 * g + 64 * i);
        lo[i] = _mm512_and_si512(z, low);
        hi[i] = _mm512_and_si512(_mm512_srli_epi16(z, 4), low);
      }
#pragma GCC unroll 4
      for (int j = 0; j < NX; ++j) {
        const size_t row = size_t(j0 + j);
        const uint8_t* q = a.q.data() + row * padded + b * 256 + 64 * size_t(g);
        __m512i s0 = _mm512_setzero_si512(), s1 = _mm512_setzero_si512();
#pragma GCC unroll 8
        for (int i = 0; i < 8; ++i) {
          s0 = _mm512_dpbusd_epi32(s0, lo[i], Broadcast4(q + 4 * i));
          s1 = _mm512_dpbusd_epi32(s1, hi[i], Broadcast4(q + 32 + 4 * i));
        }
        scaled[j] = _mm512_add_epi32(
            scaled[j], _mm512_add_epi32(_mm512_mullo_epi32(s0, sc0), _mm512_mullo_epi32(s1, sc1)));
        const int32_t* bs = a.block_sum.data() + row * sums + b * 8 + 2 * size_t(g);
        mins[j] = _mm512_add_epi32(
            mins[j], _mm512_add_epi32(_mm512_mullo_epi32(m0, _mm512_set1_epi32(bs[0])),
                                      _mm512_mullo_epi32(m1, _mm512_set1_epi32(bs[1]))));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
    const __m512 dmin =
        _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk + 32)));
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) {
      const __m512 da = _mm512_set1_ps(a.scale[size_t(j0 + j) * lanes + b * 64]);
      const __m512 v = _mm512_fmsub_ps(_mm512_cvtepi32_ps(scaled[j]), d,
                                       _mm512_mul_ps(_mm512_cvtepi32_ps(mins[j]), dmin));
      acc[j] = _mm512_fmadd_ps(v, da, acc[j]);
    }
  }
  StoreRows<NX>(acc, y, ldy, valid);
}

// One group of 16 Q6_K rows against NX activation rows from j0. Each 16-value sub-block's sum
// starts at -32 * its activations' sum (the codes are q + 32) and is then multiplied by the
// sub-block's int8 scale; d once per super-block in float.
template <int NX>
SY_VNNI void GroupQ6K(const uint8_t* group, size_t blocks, const Int8Activations& a, int64_t j0,
                      float* y, size_t ldy, int valid) {
  constexpr size_t kBlock = 16 * 210;
  const size_t padded = size_t(a.padded), lanes = padded / 4, subs = padded / 16;
  const __m512i low = _mm512_set1_epi8(0x0F), top = _mm512_set1_epi8(0x30);
  __m512 acc[NX];
#pragma GCC unroll 4
  for (int j = 0; j < NX; ++j) acc[j] = _mm512_setzero_ps();
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = group + b * kBlock;
    PrefetchAhead<kBlock>(blk);
    __m512i total[NX];
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) total[j] = _mm512_setzero_si512();
    for (int s = 0; s < 4; ++s) {  // sub-blocks s, s + 4, s + 8, s + 12
      __m512i sum[NX][4];
#pragma GCC unroll 4
      for (int j = 0; j < NX; ++j) {
        const int32_t* a16 = a.sub16_sum.data() + size_t(j0 + j) * subs + b * 16;
#pragma GCC unroll 4
        for (int k = 0; k < 4; ++k) sum[j][k] = _mm512_set1_epi32(-32 * a16[s + 4 * k]);
      }
#pragma GCC unroll 4
      for (int uu = 0; uu < 4; ++uu) {
        const int u = 4 * s + uu;  // quads u, u + 16, u + 32, u + 48
        const __m512i z0 = _mm512_loadu_si512(blk + 288 + 64 * u);
        const __m512i z1 = _mm512_loadu_si512(blk + 288 + 64 * (u + 16));
        const __m512i hb = _mm512_loadu_si512(blk + 2336 + 64 * u);
        const __m512i q0 = _mm512_or_si512(_mm512_and_si512(z0, low),
                                           _mm512_and_si512(_mm512_slli_epi16(hb, 4), top));
        const __m512i q1 = _mm512_or_si512(_mm512_and_si512(z1, low),
                                           _mm512_and_si512(_mm512_slli_epi16(hb, 2), top));
        const __m512i q2 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(z0, 4), low),
                                           _mm512_and_si512(hb, top));
        const __m512i q3 = _mm512_or_si512(_mm512_and_si512(_mm512_srli_epi16(z1, 4), low),
                                           _mm512_and_si512(_mm512_srli_epi16(hb, 2), top));
#pragma GCC unroll 4
        for (int j = 0; j < NX; ++j) {
          const uint8_t* q = a.q.data() + size_t(j0 + j) * padded + b * 256 + 4 * size_t(u);
          sum[j][0] = _mm512_dpbusd_epi32(sum[j][0], q0, Broadcast4(q));
          sum[j][1] = _mm512_dpbusd_epi32(sum[j][1], q1, Broadcast4(q + 64));
          sum[j][2] = _mm512_dpbusd_epi32(sum[j][2], q2, Broadcast4(q + 128));
          sum[j][3] = _mm512_dpbusd_epi32(sum[j][3], q3, Broadcast4(q + 192));
        }
      }
#pragma GCC unroll 4
      for (int k = 0; k < 4; ++k) {
        const __m512i sc = _mm512_cvtepi8_epi32(
            _mm_loadu_si128(reinterpret_cast<const __m128i*>(blk + 32 + 16 * (s + 4 * k))));
#pragma GCC unroll 4
        for (int j = 0; j < NX; ++j)
          total[j] = _mm512_add_epi32(total[j], _mm512_mullo_epi32(sum[j][k], sc));
      }
    }
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(blk)));
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) {
      const __m512 da = _mm512_set1_ps(a.scale[size_t(j0 + j) * lanes + b * 64]);
      acc[j] = _mm512_fmadd_ps(_mm512_cvtepi32_ps(total[j]), _mm512_mul_ps(d, da), acc[j]);
    }
  }
  StoreRows<NX>(acc, y, ldy, valid);
}

// The Q8_0 / Q4_0 group kernel, and the K types', as one callable per activation-row count.
template <DType T, int NX>
SY_VNNI void GroupOf(const uint8_t* group, size_t blocks, const Int8Activations& a, int64_t j0,
                     float* y, size_t ldy, int valid) {
  if constexpr (T == DType::Q4_K)
    GroupQ4K<NX>(group, blocks, a, j0, y, ldy, valid);
  else if constexpr (T == DType::Q6_K)
    GroupQ6K<NX>(group, blocks, a, j0, y, ldy, valid);
  else
    Group<T, NX>(group, blocks, a, j0, y, ldy, valid);
}

template <DType T>
SY_VNNI void Rows(const WeightView& w, int64_t row_begin, int64_t row_end, const Int8Activations& a,
                  float* y, size_t ldy) {
  const size_t blocks = size_t(w.cols / dtype_block(T)),
               group_bytes = packed_group_bytes(T, w.cols);
  const auto* packed = static_cast<const uint8_t*>(w.packed);
  for (int64_t r = row_begin; r < row_end; r += kPackRows) {
    const uint8_t* group = packed + size_t(r / kPackRows) * group_bytes;
    const int valid = int(std::min<int64_t>(kPackRows, row_end - r));
    float* yr = y + r;
    int64_t j = 0;
    for (; j + 4 <= a.n; j += 4)
      GroupOf<T, 4>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
    switch (a.n - j) {
      case 3:
        GroupOf<T, 3>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
        break;
      case 2:
        GroupOf<T, 2>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
        break;
      case 1:
        GroupOf<T, 1>(group, blocks, a, j, yr + size_t(j) * ldy, ldy, valid);
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
  switch (w.dtype) {
    case DType::Q8_0:
      return Rows<DType::Q8_0>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::Q4_0:
      return Rows<DType::Q4_0>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::MXFP4:
      return Rows<DType::MXFP4>(w, row_begin, row_end, a, y, size_t(ldy));
    case DType::Q4_K:
      return Rows<DType::Q4_K>(w, row_begin, row_end, a, y, size_t(ldy));
    default:
      return Rows<DType::Q6_K>(w, row_begin, row_end, a, y, size_t(ldy));
  }
}

}  // namespace sy::ops::detail
