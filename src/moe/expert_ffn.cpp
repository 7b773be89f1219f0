#include "moe/expert_ffn.h"

#include <algorithm>

#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "util/nvfp4.h"

namespace sy::moe {

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
  ops::swiglu(s.gate.data(), s.up.data(), rows * I, act);
  if (w.nvfp4_activations) {
    nvfp4_fake_quantize_rows(act, rows, I, I, s.rounded.data(), I);
    act = s.rounded.data();
  }
  ops::matmul(w.down, act, rows, out);  // [rows, H]
}

}  // namespace sy::moe
