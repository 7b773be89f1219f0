// W8A8 on repacked rows (gemm_w8a8_packed.h). Same tiling as gemm_bf16.cpp: each thread walks
// its rows in chunks of at most kChunkBytes (L2), every tile of activation rows reusing them.
#include "ops/gemm_w8a8_packed.h"

#include "ops/vnni_target.h"  // first: <immintrin.h> without GCC 12's false warnings

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>

#include "ops/interleave16.h"
#include "ops/repack.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::ops::detail {

namespace {

constexpr int kGroupRows = 16;
constexpr int kTileRows = 8;
constexpr int kTileGroups = 2;
constexpr int64_t kHeaderBytes = 128;  // 16 float scales, 16 int32 corrections
constexpr int64_t kChunkBytes = 512 * 1024;

// y[j, 16 g + c] for j < MR, g < NG, c < cols_left (clamped to 16 per group).
template <int MR, int NG>
SY_VNNI void Tile(const uint8_t* q, int64_t padded, const float* scale, const uint8_t* panel,
                  int64_t group_bytes, int64_t quads, float* y, int64_t ldy, int64_t cols_left) {
  // Fully unrolled (the pragmas), so that the accumulators live in registers.
  __m512i acc[MR][NG];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int g = 0; g < NG; ++g) acc[i][g] = _mm512_setzero_si512();
  for (int64_t p = 0; p < quads; ++p) {
    __m512i wv[NG];
#pragma GCC unroll 2
    for (int g = 0; g < NG; ++g)
      wv[g] = _mm512_loadu_si512(panel + g * group_bytes + kHeaderBytes + p * 64);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      int32_t four;
      std::memcpy(&four, q + i * padded + 4 * p, 4);
      const __m512i av = _mm512_set1_epi32(four);
#pragma GCC unroll 2
      for (int g = 0; g < NG; ++g) acc[i][g] = _mm512_dpbusd_epi32(acc[i][g], av, wv[g]);
    }
  }
#pragma GCC unroll 2
  for (int g = 0; g < NG; ++g) {
    const int64_t c = std::clamp<int64_t>(cols_left - 16 * g, 0, 16);
    const __mmask16 m = c == 16 ? __mmask16(0xFFFF) : __mmask16((1u << c) - 1);
    const __m512 sw = _mm512_loadu_ps(panel + g * group_bytes);
    const __m512i corr = _mm512_loadu_si512(panel + g * group_bytes + 64);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const __m512 s = _mm512_mul_ps(sw, _mm512_set1_ps(scale[i]));
      const __m512 v = _mm512_cvtepi32_ps(_mm512_sub_epi32(acc[i][g], corr));
      _mm512_mask_storeu_ps(y + i * ldy + 16 * g, m, _mm512_mul_ps(v, s));
    }
  }
}

using TileFn = void (*)(const uint8_t*, int64_t, const float*, const uint8_t*, int64_t, int64_t,
                        float*, int64_t, int64_t);

template <int NG, int... MR>
constexpr std::array<TileFn, sizeof...(MR)> tiles_for(std::integer_sequence<int, MR...>) {
  return {&Tile<MR + 1, NG>...};
}
constexpr auto kTiles1 = tiles_for<1>(std::make_integer_sequence<int, kTileRows>());
constexpr auto kTiles2 = tiles_for<2>(std::make_integer_sequence<int, kTileRows>());

}  // namespace

void pack_rows_w8a8(const WeightView& w, uint8_t* dst) {
  SY_ASSERT(w.dtype == DType::I8_ROW && w.data != nullptr);
  const size_t group_bytes = packed_group_bytes(DType::I8_ROW, w.cols);
  for (int64_t row0 = 0; row0 < w.rows; row0 += kGroupRows) {
    uint8_t* group = dst + size_t(row0 / kGroupRows) * group_bytes;
    const int valid = int(std::min<int64_t>(kGroupRows, w.rows - row0));
    const uint8_t* rows[kGroupRows] = {};
    std::memset(group, 0, size_t(kHeaderBytes));  // rows past the end: scale 0, correction 0
    for (int r = 0; r < valid; ++r) {
      rows[r] = static_cast<const uint8_t*>(w.row(row0 + r));
      int32_t sum;
      std::memcpy(group + 4 * r, rows[r] + w.cols, 4);  // the scale
      std::memcpy(&sum, rows[r] + w.cols + 4, 4);
      const int32_t corr = 128 * sum;
      std::memcpy(group + 64 + 4 * r, &corr, 4);
    }
    interleave16(rows, valid, w.cols, group + kHeaderBytes);
  }
}

void rows_w8a8_packed(const WeightView& w, int64_t row_begin, int64_t row_end, const uint8_t* q,
                      int64_t padded, const float* scale, int64_t n, float* y, int64_t ldy) {
  SY_ASSERT(w.packed != nullptr && row_begin % kGroupRows == 0);
  const int64_t quads = (w.cols + 3) / 4;
  const auto group_bytes = int64_t(packed_group_bytes(DType::I8_ROW, w.cols));
  const int64_t chunk_groups =
      std::max<int64_t>(kTileGroups, (kChunkBytes / group_bytes) / kTileGroups * kTileGroups);
  const int64_t groups = (row_end - row_begin + kGroupRows - 1) / kGroupRows;
  const auto* packed =
      static_cast<const uint8_t*>(w.packed) + (row_begin / kGroupRows) * group_bytes;
  for (int64_t c0 = 0; c0 < groups; c0 += chunk_groups) {
    const int64_t cg = std::min(chunk_groups, groups - c0);
    for (int64_t j0 = 0; j0 < n; j0 += kTileRows) {
      const int64_t mr = std::min<int64_t>(kTileRows, n - j0);
      for (int64_t g = 0; g < cg; g += kTileGroups) {
        const int64_t col0 = row_begin + (c0 + g) * kGroupRows;
        const TileFn fn = cg - g >= 2 ? kTiles2[size_t(mr - 1)] : kTiles1[size_t(mr - 1)];
        fn(q + j0 * padded, padded, scale + j0, packed + (c0 + g) * group_bytes, group_bytes, quads,
           y + j0 * ldy + col0, ldy, std::min(row_end, w.rows) - col0);
      }
    }
  }
}

}  // namespace sy::ops::detail
