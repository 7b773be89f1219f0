#include "train/linear.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

namespace sy::train {

namespace {

// OpenBLAS runs single-threaded (ops/threads.h); the products are split over OpenMP threads
// here. The split is fixed by the shape alone (up to kMaxBlocks blocks of at least kMinBlock
// rows of C, or columns when C has more columns than rows), never by the thread count, and no block
// splits the reduction dimension, so every element of C is one single-threaded dot in the same
// order whatever the thread count. Inside another parallel region (experts run concurrently;
// omp_get_level counts it whether or not it has several threads, so the choice does not depend on
// the thread count) a product is one call. Few blocks: each one packs the other operand again.
// Blocks are handed out dynamically, so a thread the OS preempts (a shared machine) does not hold
// the other one at the barrier.
constexpr int64_t kMinBlock = 64;
constexpr int64_t kMaxBlocks = 4;
// Below this many multiply-adds one call does it all (the fork costs more than it saves).
constexpr double kSplitMin = 1 << 21;

// C[m, n] = alpha op(A) op(B) + beta C, row-major, split as above.
void gemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
          const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  const auto ta = trans_a ? CblasTrans : CblasNoTrans, tb = trans_b ? CblasTrans : CblasNoTrans;
  if (omp_get_level() > 0) {  // inside a parallel region (active or not): one call, no repacking
    cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), 1.0f, a, int(lda), b, int(ldb), beta,
                c, int(ldc));
    return;
  }
  const bool by_rows = m >= n;
  const int64_t dim = by_rows ? m : n;
  const int64_t block = std::max(kMinBlock, ((dim + kMaxBlocks - 1) / kMaxBlocks + 15) / 16 * 16);
  const int64_t num_blocks = (dim + block - 1) / block;
  const bool split = num_blocks > 1 && double(m) * double(n) * double(k) >= kSplitMin;
#pragma omp parallel for schedule(dynamic, 1) if (split)
  for (int64_t blk = 0; blk < num_blocks; ++blk) {
    const int64_t lo = blk * block, len = std::min(block, dim - lo);
    if (by_rows) {
      const float* ab = trans_a ? a + lo : a + lo * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, int(len), int(n), int(k), 1.0f, ab, int(lda), b, int(ldb),
                  beta, c + lo * ldc, int(ldc));
    } else {
      const float* bb = trans_b ? b + lo * ldb : b + lo;
      cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(len), int(k), 1.0f, a, int(lda), bb, int(ldb),
                  beta, c + lo, int(ldc));
    }
  }
}

}  // namespace

void linear_forward(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y,
                    bool accumulate) {
  if (n == 0 || out == 0) return;
  gemm(false, true, n, out, in, x, in, w, in, accumulate ? 1.0f : 0.0f, y, out);
}

void linear_backward_input(const float* dy, int64_t n, int64_t out, const float* w, int64_t in,
                           float* dx, bool accumulate) {
  if (n == 0 || in == 0) return;
  gemm(false, false, n, in, out, dy, out, w, in, accumulate ? 1.0f : 0.0f, dx, in);
}

void linear_backward_weight(const float* dy, int64_t n, int64_t out, const float* x, int64_t in,
                            float* dw) {
  if (n == 0) return;
  gemm(true, false, out, in, n, dy, out, x, in, 1.0f, dw, in);
}

void bias_backward(const float* dy, int64_t n, int64_t out, float* db) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
}

}  // namespace sy::train
