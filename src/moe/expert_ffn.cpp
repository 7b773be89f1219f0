#include "moe/expert_ffn.h"

#include "ops/elementwise.h"
#include "ops/matmul.h"

namespace sy::moe {

void ffn_forward(const FfnWeights& w, const float* x, int64_t rows, float* out, FfnScratch& s) {
  if (rows == 0) return;
  const int64_t I = w.intermediate();
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
  ops::matmul(w.down, act, rows, out);  // [rows, H]
}

}  // namespace sy::moe
