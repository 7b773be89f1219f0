#include "moe/expert_ffn.h"

#include <algorithm>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "util/error.h"
#include "util/nvfp4.h"

namespace sy::moe {

namespace {

// GPT-OSS's activation, in its order of operations (biases, clamps, then the product).
void clamped_swiglu(const FfnWeights& w, int64_t rows, const float* gate, const float* up,
                    float* act) {
  const int64_t I = w.intermediate();
  const float L = w.clamp_limit, alpha = w.glu_alpha;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t i = 0; i < I; ++i) {
      float g = gate[r * I + i] + (w.gate_bias ? w.gate_bias[i] : 0.0f);
      float u = up[r * I + i] + (w.up_bias ? w.up_bias[i] : 0.0f);
      g = std::min(g, L);
      u = std::clamp(u, -L, L);
      act[r * I + i] = (u + 1.0f) * (g / (1.0f + std::exp(-alpha * g)));
    }
}

}  // namespace

void ffn_forward(const FfnWeights& w, const float* x, int64_t rows, float* out, FfnScratch& s) {
  if (rows == 0) return;
  const int64_t I = w.intermediate();
  if (w.nvfp4_activations) {  // one tensor scale per product input (per call)
    const int64_t H = w.hidden();
    s.rounded.resize(size_t(rows * std::max(H, I)));
    nvfp4_fake_quantize_rows(x, rows, H, H, s.rounded.data(), H);
    x = s.rounded.data();
  }
  s.gate.resize(size_t(rows * I));
  s.up.resize(size_t(rows * I));
  ops::matmul(w.gate, x, rows, s.gate.data());  // [rows, I]
  ops::matmul(w.up, x, rows, s.up.data());      // [rows, I]
  float* act = s.gate.data();
  if (s.keep) {
    s.act.resize(size_t(rows * I));
    act = s.act.data();
  }
  if (w.clamp_limit > 0) {
    SY_ASSERT_MSG(!s.keep, "the clamped SwiGLU has no backward pass");
    clamped_swiglu(w, rows, s.gate.data(), s.up.data(), act);
  } else {
    ops::swiglu(s.gate.data(), s.up.data(), rows * I, act);
  }
  if (w.nvfp4_activations) {
    nvfp4_fake_quantize_rows(act, rows, I, I, s.rounded.data(), I);
    act = s.rounded.data();
  }
  ops::matmul(w.down, act, rows, out);  // [rows, H]
  if (w.down_bias)
    for (int64_t r = 0; r < rows; ++r) ops::add(w.down_bias, w.hidden(), out + r * w.hidden());
}

}  // namespace sy::moe
