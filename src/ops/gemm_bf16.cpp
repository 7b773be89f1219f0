// BF16 products with AVX512_BF16 (gemm_bf16.h). Each thread repacks chunks of its weight rows
// (at most kChunkBytes, so a chunk stays in L2) and runs a tile of up to 12 activation rows x
// 32 output columns over the whole of k: 24 float32 accumulators, two weight loads and 12
// broadcast pairs per k pair.
#include "ops/gemm_bf16.h"

#include "ops/vnni_target.h"  // first: <immintrin.h> without GCC 12's false warnings

#include <omp.h>

#include <algorithm>
#include <array>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "ops/interleave16.h"
#include "util/error.h"

namespace sy::ops::detail {

namespace {

#define SY_BF16 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx512bf16")))

constexpr int kGroupRows = 16;  // output columns per vdpbf16ps (one float32 lane each)
constexpr int kTileRows = 12;   // activation rows per tile (24 accumulators with 2 groups)
constexpr int kTileGroups = 2;
constexpr int64_t kChunkBytes = 512 * 1024;  // repacked weights per chunk: half of Zen 5's L2

bool cpu_has_bf16() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
           __builtin_cpu_supports("avx512bf16");
  }();
  return has;
}

// dst[0 .. 2 pairs) = bf16(src[0 .. cols)), zero past cols (round to nearest, ties to even).
SY_BF16 void RoundRow(const float* src, int64_t cols, int64_t pairs, uint16_t* dst) {
  for (int64_t k = 0; k < 2 * pairs; k += 32) {
    const int64_t left = cols - k;
    const __mmask16 lo_mask =
        left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << std::max<int64_t>(0, left)) - 1);
    const __mmask16 hi_mask = left >= 32
                                  ? __mmask16(0xFFFF)
                                  : __mmask16((1u << std::clamp<int64_t>(left - 16, 0, 16)) - 1);
    const __m512 lo = _mm512_maskz_loadu_ps(lo_mask, src + k);
    const __m512 hi = _mm512_maskz_loadu_ps(hi_mask, src + k + 16);
    const __m512i v = (__m512i)_mm512_cvtne2ps_pbh(hi, lo);
    const int64_t out = std::min<int64_t>(32, 2 * pairs - k);
    const __mmask32 m = out >= 32 ? __mmask32(0xFFFFFFFFu) : __mmask32((1u << out) - 1);
    _mm512_mask_storeu_epi16(dst + k, m, v);
  }
}

// Repacks the 16 rows from `row0` (rows past w.rows are zero) into pairs x 64 bytes: piece p,
// lane r = row r's pair p.
void PackGroup(const WeightView& w, int64_t row0, uint8_t* dst) {
  const int valid = int(std::clamp<int64_t>(w.rows - row0, 0, kGroupRows));
  const uint8_t* rows[kGroupRows] = {};
  for (int r = 0; r < valid; ++r) rows[r] = static_cast<const uint8_t*>(w.row(row0 + r));
  interleave16(rows, valid, 2 * w.cols, dst);
}

// y[j, 16 g + c] for j < MR, g < NG, c < cols_left (clamped to 16 per group) = the dot of
// activation row j (bf16, pairs x 2) with packed group g.
template <int MR, int NG>
SY_BF16 void Tile(const uint16_t* a, int64_t lda, const uint8_t* panel, int64_t group_bytes,
                  int64_t pairs, float* y, int64_t ldy, int64_t cols_left) {
  // Fully unrolled (the pragmas), so that the accumulators live in registers.
  __m512 acc[MR][NG];
#pragma GCC unroll 16
  for (int i = 0; i < MR; ++i)
#pragma GCC unroll 2
    for (int g = 0; g < NG; ++g) acc[i][g] = _mm512_setzero_ps();
  const auto* a32 = reinterpret_cast<const int32_t*>(a);
  for (int64_t p = 0; p < pairs; ++p) {
    __m512bh wv[NG];
#pragma GCC unroll 2
    for (int g = 0; g < NG; ++g)
      wv[g] = (__m512bh)_mm512_loadu_si512(panel + g * group_bytes + p * 64);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      int32_t pair;
      std::memcpy(&pair, a32 + i * (lda / 2) + p, 4);
      const __m512bh av = (__m512bh)_mm512_set1_epi32(pair);
#pragma GCC unroll 2
      for (int g = 0; g < NG; ++g) acc[i][g] = _mm512_dpbf16_ps(acc[i][g], av, wv[g]);
    }
  }
#pragma GCC unroll 2
  for (int g = 0; g < NG; ++g) {
    const int64_t c = std::clamp<int64_t>(cols_left - 16 * g, 0, 16);
    const __mmask16 m = c == 16 ? __mmask16(0xFFFF) : __mmask16((1u << c) - 1);
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) _mm512_mask_storeu_ps(y + i * ldy + 16 * g, m, acc[i][g]);
  }
}

using TileFn = void (*)(const uint16_t*, int64_t, const uint8_t*, int64_t, int64_t, float*, int64_t,
                        int64_t);

template <int NG, int... MR>
constexpr std::array<TileFn, sizeof...(MR)> tiles_for(std::integer_sequence<int, MR...>) {
  return {&Tile<MR + 1, NG>...};
}
constexpr auto kTiles1 = tiles_for<1>(std::make_integer_sequence<int, kTileRows>());
constexpr auto kTiles2 = tiles_for<2>(std::make_integer_sequence<int, kTileRows>());

// One thread's share: weight rows [row_begin, row_end), 16-aligned, against all n rows, in
// chunks of at most kChunkBytes of repacked weights, each reused from L2 by every tile of
// activation rows. The repacked copy (w.packed) is read in place; otherwise each chunk is
// repacked into a buffer of this thread's first.
void Rows(const WeightView& w, int64_t row_begin, int64_t row_end, const uint16_t* a, int64_t n,
          int64_t pairs, float* y, int64_t ldy) {
  const int64_t group_bytes = pairs * 64;
  const int64_t chunk_groups =
      std::max<int64_t>(kTileGroups, (kChunkBytes / group_bytes) / kTileGroups * kTileGroups);
  const int64_t groups = (row_end - row_begin + kGroupRows - 1) / kGroupRows;
  thread_local std::vector<uint8_t> buffer;  // grows once, reused by every later call
  if (!w.packed) {
    const size_t need = size_t(std::min(chunk_groups, groups) * group_bytes);
    if (buffer.size() < need) buffer.resize(need);
  }
  for (int64_t c0 = 0; c0 < groups; c0 += chunk_groups) {
    const int64_t cg = std::min(chunk_groups, groups - c0);
    const uint8_t* panel = buffer.data();
    if (w.packed) {
      panel = static_cast<const uint8_t*>(w.packed) + (row_begin / kGroupRows + c0) * group_bytes;
    } else {
      for (int64_t g = 0; g < cg; ++g)
        PackGroup(w, row_begin + (c0 + g) * kGroupRows, buffer.data() + g * group_bytes);
    }
    for (int64_t j0 = 0; j0 < n; j0 += kTileRows) {
      const int64_t mr = std::min<int64_t>(kTileRows, n - j0);
      for (int64_t g = 0; g < cg; g += kTileGroups) {
        const int64_t col0 = row_begin + (c0 + g) * kGroupRows;
        const TileFn fn = cg - g >= 2 ? kTiles2[size_t(mr - 1)] : kTiles1[size_t(mr - 1)];
        fn(a + j0 * 2 * pairs, 2 * pairs, panel + g * group_bytes, group_bytes, pairs,
           y + j0 * ldy + col0, ldy, std::min(row_end, w.rows) - col0);
      }
    }
  }
}

}  // namespace

void pack_rows_bf16(const WeightView& w, uint8_t* dst) {
  SY_ASSERT(w.dtype == DType::BF16 && cpu_has_bf16());
  const int64_t pairs = (w.cols + 1) / 2;
  for (int64_t g = 0; g * kGroupRows < w.rows; ++g)
    PackGroup(w, g * kGroupRows, dst + g * pairs * 64);
}

bool bf16_dot_enabled() {
  static const bool enabled = [] {
    const char* env = std::getenv("SY_BF16_DOT");  // 0: the float32 path
    return !(env && std::strcmp(env, "0") == 0) && cpu_has_bf16();
  }();
  return enabled;
}

void matmul_bf16(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
                 int nt) {
  SY_ASSERT(w.dtype == DType::BF16 && cpu_has_bf16());
  const int64_t pairs = (w.cols + 1) / 2;
  thread_local std::vector<uint16_t> buffer;  // grows once, reused by every later call
  if (buffer.size() < size_t(n * 2 * pairs)) buffer.resize(size_t(n * 2 * pairs));
  uint16_t* a = buffer.data();  // the caller's: each OpenMP thread has its own `buffer`
  auto body = [&](int tid, int threads) {
    const int64_t align = kGroupRows * kTileGroups;
    const int64_t blocks = (w.rows + align - 1) / align;
    const int64_t begin = std::min(w.rows, blocks * tid / threads * align);
    const int64_t end = std::min(w.rows, blocks * (tid + 1) / threads * align);
    if (end > begin) Rows(w, begin, end, a, n, pairs, y, ldy);
  };
  if (nt == 1) {
    for (int64_t j = 0; j < n; ++j) RoundRow(x + j * ldx, w.cols, pairs, a + j * 2 * pairs);
    return body(0, 1);
  }
#pragma omp parallel num_threads(nt)
  {
#pragma omp for schedule(static)
    for (int64_t j = 0; j < n; ++j) RoundRow(x + j * ldx, w.cols, pairs, a + j * 2 * pairs);
    body(omp_get_thread_num(), omp_get_num_threads());
  }
}

}  // namespace sy::ops::detail
