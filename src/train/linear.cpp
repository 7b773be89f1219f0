#include "train/linear.h"

#include <cblas.h>

namespace sy::train {

void linear_forward(const float* x, int64_t n, int64_t in, const float* w, int64_t out, float* y,
                    bool accumulate) {
  if (n == 0 || out == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, int(n), int(out), int(in), 1.0f, x, int(in),
              w, int(in), accumulate ? 1.0f : 0.0f, y, int(out));
}

void linear_backward_input(const float* dy, int64_t n, int64_t out, const float* w, int64_t in,
                           float* dx, bool accumulate) {
  if (n == 0 || in == 0) return;
  cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, int(n), int(in), int(out), 1.0f, dy,
              int(out), w, int(in), accumulate ? 1.0f : 0.0f, dx, int(in));
}

void linear_backward_weight(const float* dy, int64_t n, int64_t out, const float* x, int64_t in,
                            float* dw) {
  if (n == 0) return;
  cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, int(out), int(in), int(n), 1.0f, dy,
              int(out), x, int(in), 1.0f, dw, int(in));
}

void bias_backward(const float* dy, int64_t n, int64_t out, float* db) {
  for (int64_t r = 0; r < n; ++r)
    for (int64_t j = 0; j < out; ++j) db[j] += dy[r * out + j];
}

}  // namespace sy::train
