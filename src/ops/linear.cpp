#include "ops/linear.h"

#include "ops/gemm.h"

namespace sy::ops {

void linear_forward(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y,
                    bool accumulate) {
  if (n == 0 || out == 0) return;
  sgemm(Trans::kNo, Trans::kYes, n, out, in, 1.0f, x, in, w, in, accumulate ? 1.0f : 0.0f, y, out);
}

void linear_backward_input(const float* dy, int64_t n, int64_t out, const float* w, int64_t in,
                           float* dx, bool accumulate) {
  if (n == 0 || in == 0) return;
  sgemm(Trans::kNo, Trans::kNo, n, in, out, 1.0f, dy, out, w, in, accumulate ? 1.0f : 0.0f, dx, in);
}

void linear_backward_weight(const float* dy, int64_t n, int64_t out, const float* x, int64_t in,
                            float* dw) {
  if (n == 0) return;
  sgemm(Trans::kYes, Trans::kNo, out, in, n, 1.0f, dy, out, x, in, 1.0f, dw, in);
}

void bias_backward(const float* dy, int64_t n, int64_t out, float* db) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
}

}  // namespace sy::ops
