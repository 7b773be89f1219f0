#include "util/nvfp4.h"

#include <algorithm>
#include <cmath>

namespace sy {

namespace {

// v rounded to a multiple of `step`, ties to even multiples (the format's even codes).
float round_to_step(float v, float step) {
  return std::nearbyint(v / step) * step;
}

// One scale for the blocks of rows [0, rows): max|x| / (6 * 448); 0 when all are zero.
float global_scale(const float* x, int64_t rows, int64_t cols, int64_t ld) {
  float amax = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < cols; ++k) amax = std::max(amax, std::fabs(x[r * ld + k]));
  return std::isfinite(amax) ? amax / (6.0f * 448.0f) : 0.0f;
}

void quantize_row(const float* x, int64_t n, float global, float* out) {
  for (int64_t b = 0; b < n; b += 16) {
    const int64_t end = std::min(n, b + 16);
    float bmax = 0;
    for (int64_t i = b; i < end; ++i) bmax = std::max(bmax, std::fabs(x[i]));
    const float scale = global > 0 ? round_e4m3(bmax / 6.0f / global) * global : 0.0f;
    for (int64_t i = b; i < end; ++i) out[i] = scale > 0 ? round_e2m1(x[i] / scale) * scale : 0.0f;
  }
}

}  // namespace

float round_e4m3(float v) {
  if (!(v > 0)) return 0.0f;
  if (v >= 448.0f) return 448.0f;
  constexpr float kMinNormal = 0x1p-6f;
  if (v < kMinNormal) return round_to_step(v, 0x1p-9f);  // subnormals: m * 2^-9
  int e;
  std::frexp(v, &e);  // v = f * 2^e, f in [0.5, 1): the binade [2^(e-1), 2^e)
  return std::min(448.0f, round_to_step(v, std::ldexp(1.0f, e - 1 - 3)));  // 3 mantissa bits
}

float round_e2m1(float v) {
  const float a = std::fabs(v);
  const float r = a >= 6.0f  ? 6.0f
                  : a < 2.0f ? round_to_step(a, 0.5f)
                  : a < 4.0f ? round_to_step(a, 1.0f)
                             : round_to_step(a, 2.0f);
  return std::copysign(r, v);
}

void nvfp4_fake_quantize(const float* x, int64_t n, float* out) {
  quantize_row(x, n, global_scale(x, 1, n, n), out);
}

void nvfp4_fake_quantize_rows(const float* x, int64_t rows, int64_t cols, int64_t ld, float* out,
                              int64_t ld_out) {
  const float global = global_scale(x, rows, cols, ld);
  for (int64_t r = 0; r < rows; ++r) quantize_row(x + r * ld, cols, global, out + r * ld_out);
}

}  // namespace sy
