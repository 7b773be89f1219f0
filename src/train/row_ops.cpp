#include "train/row_ops.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "ops/elementwise.h"

namespace sy::train {

void rmsnorm_backward(const float* dy, const float* x, const float* w, const float* rstd,
                      int64_t rows, int64_t n, float* dx, float* dw, bool accumulate_dx) {
  // dw is shared by all rows: fixed chunks of rows sum into their own copy, then the copies are
  // added in chunk order, so the result does not depend on the thread count.
  constexpr int64_t kRowsPerChunk = 64;
  const int64_t num_chunks = (rows + kRowsPerChunk - 1) / kRowsPerChunk;
  if (num_chunks <= 1) {
    for (int64_t r = 0; r < rows; ++r)
      ops::rmsnorm_backward(dy + r * n, x + r * n, w, rstd[r], n, dx + r * n, dw, accumulate_dx);
    return;
  }
  std::vector<float> partial(size_t(num_chunks * n), 0.0f);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t c = 0; c < num_chunks; ++c) {
    float* pw = partial.data() + c * n;
    for (int64_t r = c * kRowsPerChunk, end = std::min(rows, (c + 1) * kRowsPerChunk); r < end; ++r)
      ops::rmsnorm_backward(dy + r * n, x + r * n, w, rstd[r], n, dx + r * n, pw, accumulate_dx);
  }
  for (int64_t c = 0; c < num_chunks; ++c) ops::add(partial.data() + c * n, n, dw);
}

void swiglu_backward(const float* dh, const float* g, const float* u, int64_t n, float* dg,
                     float* du) {
  // Chunks in parallel: expert batches are [rows, I] blocks of up to a few million values.
  constexpr int64_t kChunk = 1 << 14;
#pragma omp parallel for schedule(static) if (n > 4 * kChunk)
  for (int64_t c = 0; c < (n + kChunk - 1) / kChunk; ++c) {
    const int64_t b = c * kChunk, len = std::min(kChunk, n - b);
    ops::swiglu_backward(dh + b, g + b, u + b, len, dg + b, du + b);
  }
}

void rope_backward(float* d, int64_t rot_dim, const float* cos, const float* sin) {
  // Forward: (a, b) -> (a c - b s, b c + a s). Its transpose: (da, db) -> (da c + db s, db c - da
  // s).
  const int64_t half = rot_dim / 2;
  for (int64_t i = 0; i < half; ++i) {
    const float da = d[i], db = d[i + half];
    d[i] = da * cos[i] + db * sin[i];
    d[i + half] = db * cos[i] - da * sin[i];
  }
}

double cross_entropy_forward_backward(float* logits, const int32_t* targets, int64_t rows,
                                      int64_t vocab, float scale) {
  double total = 0;
#pragma omp parallel for schedule(static) reduction(+ : total)
  for (int64_t r = 0; r < rows; ++r) {
    float* z = logits + r * vocab;
    const int32_t target = targets[r];
    if (target < 0) {
      std::fill(z, z + vocab, 0.0f);
      continue;
    }
    // -log softmax(z)[target], from the SIMD softmax. p_target has float's relative precision,
    // so the loss is exact to ~1e-7 absolute; a p_target that underflowed (logit 87+ below the
    // max) counts as the smallest float (loss 103.3) -- the gradient p - onehot stays exact.
    ops::softmax(z, vocab);  // z <- p
    total +=
        -std::log(std::max(double(z[target]), double(std::numeric_limits<float>::denorm_min())));
    for (int64_t i = 0; i < vocab; ++i) z[i] *= scale;
    z[target] -= scale;
  }
  return total;
}

}  // namespace sy::train
