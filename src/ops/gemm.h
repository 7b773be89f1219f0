// The one float32 GEMM entry point: C[m, n] = alpha op(A) op(B) + beta C, row-major, on
// OpenBLAS (pinned to one thread) split over OpenMP threads. The split depends on the shape
// alone, never on the thread count, and no block splits the reduction, so every element of C
// is the same single-threaded dot whatever the thread count: results are reproducible
// across --threads. Inference (weight products at prefill sizes, router logits, attention
// products) and training (every linear layer, forward and backward) call it.
#pragma once

#include <cstdint>

namespace sy::ops {

enum class Trans : bool { kNo = false, kYes = true };

void sgemm(Trans trans_a, Trans trans_b, int64_t m, int64_t n, int64_t k, float alpha,
           const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c,
           int64_t ldc);

}  // namespace sy::ops
