// Dispatch of weight products: up to kStreamMaxRows activation rows (kF32StreamMaxRows for
// float32 weights) stream W once through the Highway kernels (gemv_simd.cpp); larger batches
// go through ops::sgemm (gemm.h): float32 W in place, other dtypes widened to float32 panels
// on each OpenMP thread's share of the output columns.
#include "ops/matmul.h"

#include <omp.h>

#include <algorithm>
#include <vector>

#include "ops/gemm.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_w8a8.h"
#include "ops/gemv_int8.h"
#include "ops/kernels.h"
#include "ops/repack.h"
#include "ops/threads.h"
#include "util/error.h"

namespace sy::ops {

namespace {

// Activation rows up to which the streaming kernel is used. bench_kernels (crossover) on
// Zen 5, BF16 1024x2816 / 2816x1024, 2 threads: stream ~210 GFLOP/s (the FMA peak: this
// VM runs 512-bit FMAs at half rate) at every n from 4 to 512; widen + sgemm 60-190.
// Above 512 rows OpenBLAS's packing amortises best; not measured further.
constexpr int64_t kStreamMaxRows = 512;
// Float32 weights need no widening, so the sgemm path costs nothing extra; above this many
// rows OpenBLAS's packed kernel beats the stream kernel. bench_moe_layer (shape A experts,
// weights from DRAM, Zen 5, 1 thread, stream / sgemm per matrix): 1.0-1.05 at 64 rows,
// 0.75-0.85 at 128, 0.65 at 512. Streaming up to 512 rows left the grouped expert FFN at
// 0.65-0.77 of sgemm at prefill sizes (128-512 rows per expert).
constexpr int64_t kF32StreamMaxRows = 64;
// ggml blocks (Q8_0 / Q4_0) cost 2-4 more instructions per weight to decode than BF16, and the
// stream kernel decodes a block once per 4 activation rows: beyond a few rows, decoding panels
// once and running sgemm wins. bench (shape A, Zen 5, 2 threads, prompt 128): Q8_0 prefill
// 177 tokens/s streamed, see bench/results/quantized.md for the panel path.
constexpr int64_t kBlockStreamMaxRows = 4;
// ggml blocks with AVX-512 VNNI (gemv_int8.h): activations quantized to int8 and integer dot
// products, up to this many activation rows; the widen + sgemm panel path above it.
constexpr int64_t kInt8MaxRows = 512;
// Rows of W widened per sgemm call: ~1 MiB of float32 at cols = 1024, reused from L2.
constexpr int64_t kPanelBytes = 1 << 20;

// Splits [0, rows) into num_threads contiguous ranges aligned to `align` rows.
void thread_range(int64_t rows, int64_t align, int tid, int nt, int64_t* begin, int64_t* end) {
  const int64_t blocks = (rows + align - 1) / align;
  const int64_t b0 = blocks * tid / nt, b1 = blocks * (tid + 1) / nt;
  *begin = std::min(rows, b0 * align);
  *end = std::min(rows, b1 * align);
}

// Threads pay off only when each gets enough weight bytes to amortise the fork (~2 us).
int threads_for(const WeightView& w, int64_t n) {
  const int nt = num_threads();
  const double work = double(w.bytes()) + double(n) * double(w.rows) * double(w.cols) * 0.5;
  return work < 64 * 1024 ? 1 : nt;
}

}  // namespace

namespace detail {

// Y[n, rows] = X W^T for large n: each thread widens panels of its rows and calls sgemm.
void matmul_sgemm(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y,
                  int64_t ldy, int nt) {
  const int64_t panel_rows = std::max<int64_t>(
      16, (kPanelBytes / int64_t(sizeof(float)) / std::max<int64_t>(1, w.cols)) & ~int64_t(15));
  if (w.dtype == DType::F32)  // used in place: the one GEMM entry point (gemm.h)
    return sgemm(Trans::kNo, Trans::kYes, n, w.rows, w.cols, 1.0f, x, ldx,
                 static_cast<const float*>(w.data), w.cols, 0.0f, y, ldy);
#pragma omp parallel num_threads(nt)
  {
    int64_t begin, end;
    thread_range(w.rows, 16, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
    thread_local std::vector<float> panel;  // grows once, reused by every later call
    const size_t need = size_t(std::min(panel_rows, end - begin)) * size_t(w.cols);
    if (panel.size() < need) panel.resize(need);
    for (int64_t r = begin; r < end; r += panel_rows) {
      const int64_t count = std::min(panel_rows, end - r);
      detail::widen_rows(w, r, r + count, panel.data());
      // Inside this parallel region: one single-threaded call.
      sgemm(Trans::kNo, Trans::kYes, n, count, w.cols, 1.0f, x, ldx, panel.data(), w.cols, 0.0f,
            y + r, ldy);
    }
  }
}

void matmul_int8(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y, int64_t ldy,
                 int nt) {
  thread_local Int8Activations buffer;  // grows once, reused by every later call
  const bool packed = w.packed != nullptr;
  quantize_activations(w.dtype, x, n, ldx, w.cols, &buffer, packed);
  const Int8Activations& a = buffer;  // the caller's: each OpenMP thread has its own `buffer`
  auto rows = [&](int64_t begin, int64_t end) {
    if (packed) return gemv_rows_int8_packed(w, begin, end, a, y, ldy);
    gemv_rows_int8(w, begin, end, a, y, ldy);
  };
  if (nt == 1) return rows(0, w.rows);
#pragma omp parallel num_threads(nt)
  {
    int64_t begin, end;
    thread_range(w.rows, packed ? kPackRows : 4, omp_get_thread_num(), omp_get_num_threads(),
                 &begin, &end);
    if (end > begin) rows(begin, end);
  }
}

void matmul_stream(const WeightView& w, const float* x, int64_t n, int64_t ldx, float* y,
                   int64_t ldy, int nt) {
  if (nt == 1) return gemv_rows(w, 0, w.rows, x, n, ldx, y, ldy);
#pragma omp parallel num_threads(nt)
  {
    int64_t begin, end;
    thread_range(w.rows, 4, omp_get_thread_num(), omp_get_num_threads(), &begin, &end);
    if (end > begin) gemv_rows(w, begin, end, x, n, ldx, y, ldy);
  }
}

}  // namespace detail

void gemv(const WeightView& w, const float* x, float* y) {
  matmul(w, x, 1, y);
}

void matmul(const WeightView& w, const float* x, int64_t n, float* y, int64_t x_stride,
            int64_t y_stride) {
  SY_ASSERT(w.data != nullptr || w.rows == 0 || w.cols == 0);
  SY_ASSERT(n >= 0 && w.rows >= 0 && w.cols >= 0);
  const int64_t ldx = x_stride == 0 ? w.cols : x_stride;
  const int64_t ldy = y_stride == 0 ? w.rows : y_stride;
  SY_ASSERT(ldx >= w.cols && ldy >= w.rows);
  if (n == 0 || w.rows == 0) return;
  if (w.cols == 0) {
    for (int64_t j = 0; j < n; ++j) std::fill(y + j * ldy, y + j * ldy + w.rows, 0.0f);
    return;
  }
  const int nt = threads_for(w, n);
  if (w.dtype == DType::I8_ROW) return detail::matmul_w8a8(w, x, n, ldx, y, ldy, nt);
  const int64_t stream_max = w.dtype == DType::F32    ? kF32StreamMaxRows
                             : is_block_type(w.dtype) ? kBlockStreamMaxRows
                                                      : kStreamMaxRows;
  if (is_block_type(w.dtype) && n <= kInt8MaxRows && detail::int8_dot_enabled())
    return detail::matmul_int8(w, x, n, ldx, y, ldy, nt);
  if (w.dtype == DType::BF16 && detail::bf16_dot_enabled())
    return detail::matmul_bf16(w, x, n, ldx, y, ldy, nt);
  if (n > stream_max) return detail::matmul_sgemm(w, x, n, ldx, y, ldy, nt);
  detail::matmul_stream(w, x, n, ldx, y, ldy, nt);
}

void sgemm_nt(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* y, int64_t ldy, float alpha) {
  SY_ASSERT(m >= 0 && n >= 0 && k >= 0);
  sgemm(Trans::kNo, Trans::kYes, m, n, k, alpha, a, lda, b, ldb, 0.0f, y, ldy);
}

void sgemm_nn(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, const float* b,
              int64_t ldb, float* y, int64_t ldy) {
  SY_ASSERT(m >= 0 && n >= 0 && k >= 0);
  sgemm(Trans::kNo, Trans::kNo, m, n, k, 1.0f, a, lda, b, ldb, 0.0f, y, ldy);
}

}  // namespace sy::ops
