#include "ops/gemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>

#include "ops/threads.h"

namespace sy::ops {

namespace {

// Up to kMaxBlocks blocks of at least kMinBlock rows of C (or columns, when C has more
// columns than rows): few blocks, since each packs the other operand again. Blocks are handed
// out dynamically, so a thread the OS preempts (a shared machine) does not hold the other one
// at the barrier. Inside another parallel region (experts running concurrently; omp_get_level
// counts it whether or not it has several threads, so the choice does not depend on the
// thread count) a product is one call.
constexpr int64_t kMinBlock = 64;
constexpr int64_t kMaxBlocks = 4;
// Below this many multiply-adds one call does it all (the fork costs more than it saves).
constexpr double kSplitMin = 1 << 21;

}  // namespace

void sgemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc) {
  if (m == 0 || n == 0) return;
  const bool ta_yes = trans_a == Trans::kYes, tb_yes = trans_b == Trans::kYes;
  const auto ta = ta_yes ? CblasTrans : CblasNoTrans, tb = tb_yes ? CblasTrans : CblasNoTrans;
  if (k == 0) {  // OpenBLAS may leave C alone when k = 0: C = beta C
    for (int64_t i = 0; i < m; ++i)
      for (int64_t j = 0; j < n; ++j) c[i * ldc + j] = beta == 0.0f ? 0.0f : beta * c[i * ldc + j];
    return;
  }
  num_threads();  // pins OpenBLAS to one thread on first use
  if (omp_get_level() > 0) {
    cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(n), int(k), alpha, a, int(lda), b, int(ldb),
                beta, c, int(ldc));
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
      const float* ab = ta_yes ? a + lo : a + lo * lda;
      cblas_sgemm(CblasRowMajor, ta, tb, int(len), int(n), int(k), alpha, ab, int(lda), b, int(ldb),
                  beta, c + lo * ldc, int(ldc));
    } else {
      const float* bb = tb_yes ? b + lo * ldb : b + lo;
      cblas_sgemm(CblasRowMajor, ta, tb, int(m), int(len), int(k), alpha, a, int(lda), bb, int(ldb),
                  beta, c + lo, int(ldc));
    }
  }
}

}  // namespace sy::ops
