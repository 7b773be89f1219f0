// W8A8 products (gemm_w8a8.h). The VNNI kernel holds a tile of 4 weight rows x up to 6
// activation rows in 24 int32 accumulators; vpdpbusd multiplies unsigned by signed bytes, so
// the activations travel as q + 128 (u8) and 128 * sum(q_w) of each row (stored with it) is
// subtracted at the end.
#include "ops/gemm_w8a8.h"

#if defined(__GNUC__) && !defined(__clang__)
// GCC 12 flags the intrinsics' own _mm512_undefined_* placeholders as uninitialized.
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "ops/gemm_w8a8_packed.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::ops {

namespace {

#define SY_W8A8 __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))

struct RowTail {  // what follows the q bytes of an I8_ROW row
  float scale;
  int32_t sum;
};

RowTail tail_of(const uint8_t* row, int64_t cols) {
  RowTail t;
  std::memcpy(&t.scale, row + cols, 4);
  std::memcpy(&t.sum, row + cols + 4, 4);
  return t;
}

// Activation rows as u8 (q + 128), each padded with 128 (q = 0) to a multiple of 64 bytes.
struct Activations {
  int64_t padded = 0;
  std::vector<uint8_t> q;    // [n, padded]
  std::vector<float> scale;  // [n]
};

bool cpu_has_vnni();

// q[k] = round(x[k] * id) + offset (ties to even; |x| <= max|x| keeps q in -127..127), for
// k < n; returns max|x| when id is 0 (the first pass), else the sum of the codes.
float MaxAbsScalar(const float* x, int64_t n) {
  float amax = 0;
  for (int64_t k = 0; k < n; ++k) amax = std::max(amax, std::fabs(x[k]));
  return amax;
}
int32_t CodesScalar(const float* x, int64_t n, float id, int offset, uint8_t* q) {
  int32_t sum = 0;
  for (int64_t k = 0; k < n; ++k) {
    const int v = std::clamp(int(std::nearbyint(x[k] * id)), -127, 127);
    q[k] = uint8_t(v + offset);
    sum += v;
  }
  return sum;
}

SY_W8A8 float MaxAbsVnni(const float* x, int64_t n) {
  __m512 m = _mm512_setzero_ps();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) m = _mm512_max_ps(m, _mm512_abs_ps(_mm512_loadu_ps(x + k)));
  float amax = _mm512_reduce_max_ps(m);
  for (; k < n; ++k) amax = std::max(amax, std::fabs(x[k]));
  return amax;
}
SY_W8A8 int32_t CodesVnni(const float* x, int64_t n, float id, int offset, uint8_t* q) {
  const __m512 vid = _mm512_set1_ps(id);
  const __m512i lo = _mm512_set1_epi32(-127), hi = _mm512_set1_epi32(127),
                off = _mm512_set1_epi32(offset);
  __m512i sum = _mm512_setzero_si512();
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {  // cvtps_epi32 rounds to nearest even (MXCSR default)
    const __m512i v = _mm512_min_epi32(
        hi, _mm512_max_epi32(lo, _mm512_cvtps_epi32(_mm512_mul_ps(_mm512_loadu_ps(x + k), vid))));
    sum = _mm512_add_epi32(sum, v);
    _mm_storeu_si128(reinterpret_cast<__m128i*>(q + k),
                     _mm512_cvtepi32_epi8(_mm512_add_epi32(v, off)));
  }
  return _mm512_reduce_add_epi32(sum) + CodesScalar(x + k, n - k, id, offset, q + k);
}

// BF16 to float32 (a 16-bit shift), for converting stored BF16 experts at run time (ReaLB).
SY_W8A8 void WidenBf16Vnni(const uint16_t* x, int64_t n, float* y) {
  int64_t k = 0;
  for (; k + 16 <= n; k += 16) {
    const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + k));
    _mm512_storeu_si512(y + k, _mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
  }
  for (; k < n; ++k) y[k] = bf16_to_f32(x[k]);
}

// One row: returns its scale; codes (+ offset) to q, their sum to *sum.
float QuantizeRow(const float* x, int64_t n, int offset, uint8_t* q, int32_t* sum) {
  const bool fast = cpu_has_vnni();
  const float amax = fast ? MaxAbsVnni(x, n) : MaxAbsScalar(x, n);
  const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
  *sum = fast ? CodesVnni(x, n, id, offset, q) : CodesScalar(x, n, id, offset, q);
  return d;
}

void quantize_activations(const float* x, int64_t n, int64_t ldx, int64_t cols, Activations* a) {
  a->padded = (cols + 63) / 64 * 64;
  a->q.resize(size_t(n * a->padded));
  a->scale.resize(size_t(n));
  for (int64_t j = 0; j < n; ++j) {
    uint8_t* q = a->q.data() + j * a->padded;
    int32_t sum;
    a->scale[size_t(j)] = QuantizeRow(x + j * ldx, cols, 128, q, &sum);
    std::fill(q + cols, q + a->padded, uint8_t(128));  // q = 0 past the row
  }
}

// Sums of 4 accumulators (rows r0..r3 of one activation row): [sum a0, sum a1, sum a2, sum a3].
SY_W8A8 inline __m128i Reduce4(__m512i a0, __m512i a1, __m512i a2, __m512i a3) {
  const __m512i t0 = _mm512_add_epi32(_mm512_unpacklo_epi32(a0, a1), _mm512_unpackhi_epi32(a0, a1));
  const __m512i t1 = _mm512_add_epi32(_mm512_unpacklo_epi32(a2, a3), _mm512_unpackhi_epi32(a2, a3));
  // Each 128-bit lane: [a0 a1 a2 a3] partial sums.
  const __m512i u = _mm512_add_epi32(_mm512_unpacklo_epi64(t0, t1), _mm512_unpackhi_epi64(t0, t1));
  const __m256i h = _mm256_add_epi32(_mm512_castsi512_si256(u), _mm512_extracti64x4_epi64(u, 1));
  return _mm_add_epi32(_mm256_castsi256_si128(h), _mm256_extracti128_si256(h, 1));
}

// R (1 or 4) weight rows from `w` times NX activation rows from j0.
template <int R, int NX>
SY_W8A8 void Tile(const uint8_t* w, size_t row_bytes, int64_t cols, const Activations& a,
                  int64_t j0, float* y, int64_t ldy) {
  __m512i acc[R][NX];
#pragma GCC unroll 4
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 6
    for (int j = 0; j < NX; ++j) acc[r][j] = _mm512_setzero_si512();
  const uint8_t* act = a.q.data() + j0 * a.padded;
  for (int64_t k = 0; k < cols; k += 64) {
    const __mmask64 m = cols - k >= 64 ? ~__mmask64(0) : (__mmask64(1) << (cols - k)) - 1;
    __m512i wv[R];
#pragma GCC unroll 4
    for (int r = 0; r < R; ++r) wv[r] = _mm512_maskz_loadu_epi8(m, w + size_t(r) * row_bytes + k);
#pragma GCC unroll 6
    for (int j = 0; j < NX; ++j) {
      const __m512i av = _mm512_loadu_si512(act + j * a.padded + k);
#pragma GCC unroll 4
      for (int r = 0; r < R; ++r) acc[r][j] = _mm512_dpbusd_epi32(acc[r][j], av, wv[r]);
    }
  }
  float sw[R];
  int32_t corr[R];
  for (int r = 0; r < R; ++r) {
    const RowTail t = tail_of(w + size_t(r) * row_bytes, cols);
    sw[r] = t.scale, corr[r] = 128 * t.sum;
  }
  for (int j = 0; j < NX; ++j) {
    const float sa = a.scale[size_t(j0 + j)];
    float* yj = y + (j0 + j) * ldy;
    if constexpr (R == 4) {
      alignas(16) int32_t s[4];
      _mm_store_si128(reinterpret_cast<__m128i*>(s),
                      Reduce4(acc[0][j], acc[1][j], acc[2][j], acc[3][j]));
      for (int r = 0; r < 4; ++r) yj[r] = float(s[r] - corr[r]) * (sw[r] * sa);
    } else {
      for (int r = 0; r < R; ++r)
        yj[r] = float(_mm512_reduce_add_epi32(acc[r][j]) - corr[r]) * (sw[r] * sa);
    }
  }
}

// R weight rows times activation rows [j, end).
template <int R>
SY_W8A8 void Rows(const uint8_t* w, size_t row_bytes, int64_t cols, const Activations& a, int64_t j,
                  int64_t end, float* y, int64_t ldy) {
  for (; j + 6 <= end; j += 6) Tile<R, 6>(w, row_bytes, cols, a, j, y, ldy);
  switch (end - j) {
    case 5:
      return Tile<R, 5>(w, row_bytes, cols, a, j, y, ldy);
    case 4:
      return Tile<R, 4>(w, row_bytes, cols, a, j, y, ldy);
    case 3:
      return Tile<R, 3>(w, row_bytes, cols, a, j, y, ldy);
    case 2:
      return Tile<R, 2>(w, row_bytes, cols, a, j, y, ldy);
    case 1:
      return Tile<R, 1>(w, row_bytes, cols, a, j, y, ldy);
    default:
      return;
  }
}

// Activation rows go in chunks that stay in L2 (~256 KiB) while every weight row of
// [begin, end) passes over them: the weights are re-read once per chunk, the activations never.
SY_W8A8 void RowsVnni(const WeightView& w, int64_t begin, int64_t end, const Activations& a,
                      int64_t n, float* y, int64_t ldy) {
  const auto* base = static_cast<const uint8_t*>(w.data);
  const size_t rb = w.row_bytes();
  const int64_t chunk = std::max<int64_t>(6, (int64_t(256) << 10) / a.padded / 6 * 6);
  for (int64_t j = 0; j < n; j += chunk) {
    const int64_t j_end = std::min(n, j + chunk);
    int64_t r = begin;
    for (; r + 4 <= end; r += 4)
      Rows<4>(base + size_t(r) * rb, rb, w.cols, a, j, j_end, y + r, ldy);
    for (; r < end; ++r) Rows<1>(base + size_t(r) * rb, rb, w.cols, a, j, j_end, y + r, ldy);
  }
}

// The same integer arithmetic without VNNI.
void RowsScalar(const WeightView& w, int64_t begin, int64_t end, const Activations& a, int64_t n,
                float* y, int64_t ldy) {
  for (int64_t r = begin; r < end; ++r) {
    const auto* row = static_cast<const uint8_t*>(w.row(r));
    const RowTail t = tail_of(row, w.cols);
    for (int64_t j = 0; j < n; ++j) {
      const uint8_t* q = a.q.data() + j * a.padded;
      int32_t s = 0;
      for (int64_t k = 0; k < w.cols; ++k) s += (int32_t(q[k]) - 128) * int32_t(int8_t(row[k]));
      y[j * ldy + r] = float(s) * (t.scale * a.scale[size_t(j)]);
    }
  }
}

bool cpu_has_vnni() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512vnni");
  }();
  return has;
}

// Splits [0, rows) into nt ranges aligned to `align` rows.
void split(int64_t rows, int64_t align, int tid, int nt, int64_t* begin, int64_t* end) {
  const int64_t tiles = (rows + align - 1) / align;
  *begin = std::min(rows, tiles * tid / nt * align);
  *end = std::min(rows, tiles * (tid + 1) / nt * align);
}

}  // namespace

void quantize_rows_i8(const WeightView& src, void* dst, int threads) {
  SY_ASSERT(src.dtype != DType::I8_ROW);
  const size_t rb = dtype_bytes(DType::I8_ROW, src.cols);
  auto* out = static_cast<uint8_t*>(dst);
#pragma omp parallel num_threads(std::max(1, threads))
  {
    std::vector<float> x(size_t(src.cols));
    int64_t begin, end;
    split(src.rows, 4, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
    for (int64_t r = begin; r < end; ++r) {
      const float* xr = static_cast<const float*>(src.row(r));
      if (src.dtype == DType::BF16 && cpu_has_vnni()) {
        WidenBf16Vnni(static_cast<const uint16_t*>(src.row(r)), src.cols, x.data());
        xr = x.data();
      } else if (src.dtype != DType::F32) {
        to_f32(src.dtype, src.row(r), x.data(), x.size());
        xr = x.data();
      }
      uint8_t* row = out + size_t(r) * rb;
      int32_t sum;
      const float d = QuantizeRow(xr, src.cols, 0, row, &sum);
      std::memcpy(row + src.cols, &d, 4);
      std::memcpy(row + src.cols + 4, &sum, 4);
    }
  }
}

void dequantize_rows_i8(const WeightView& w, float* dst) {
  SY_ASSERT(w.dtype == DType::I8_ROW);
  for (int64_t r = 0; r < w.rows; ++r) {
    const auto* row = static_cast<const uint8_t*>(w.row(r));
    const float d = tail_of(row, w.cols).scale;
    for (int64_t k = 0; k < w.cols; ++k) dst[r * w.cols + k] = d * float(int8_t(row[k]));
  }
}

namespace detail {

bool w8a8_fast() {
  static const bool fast = [] {
    const char* env = std::getenv("SY_INT8_DOT");  // 0: the scalar loop (as gemv_int8.h)
    return !(env && std::strcmp(env, "0") == 0) && cpu_has_vnni();
  }();
  return fast;
}

void matmul_w8a8(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
                 int threads) {
  SY_ASSERT(w.dtype == DType::I8_ROW);
  thread_local Activations buffer;  // grows once, reused by every later call
  quantize_activations(x, n, ldx, w.cols, &buffer);
  const Activations& a = buffer;  // the caller's: each OpenMP thread has its own `buffer`
  const bool packed = w.packed != nullptr && w8a8_fast();
  auto rows = [&](int64_t begin, int64_t end) {
    if (packed)
      rows_w8a8_packed(w, begin, end, a.q.data(), a.padded, a.scale.data(), n, y, ldy);
    else if (w8a8_fast())
      RowsVnni(w, begin, end, a, n, y, ldy);
    else
      RowsScalar(w, begin, end, a, n, y, ldy);
  };
  if (threads <= 1) return rows(0, w.rows);
#pragma omp parallel num_threads(threads)
  {
    int64_t begin, end;
    split(w.rows, packed ? 32 : 4, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
    if (end > begin) rows(begin, end);
  }
}

}  // namespace detail
}  // namespace sy::ops
