#include "train/ffn_grad.h"

#include "ops/elementwise.h"
#include "ops/linear.h"
#include "train/row_ops.h"

namespace sy::train {

moe::FfnWeights weight_views(const FfnParams& w) {
  return moe::FfnWeights{w.gate->view(), w.up->view(), w.down->view()};
}

void ffn_train_backward(const FfnParams& w, const float* x, int64_t rows, const FfnActivations& act,
                        const float* dy, float* dx, bool accumulate_dx, FfnActivations& s) {
  const int64_t H = w.hidden(), I = w.intermediate();
  // scratch: act <- d act, gate <- d gate, up <- d up
  s.act.resize(size_t(rows * I));
  s.gate.resize(size_t(rows * I));
  s.up.resize(size_t(rows * I));
  ops::linear_backward_weight(dy, rows, H, act.act.data(), I, w.down->grad.data());
  ops::linear_backward_input(dy, rows, H, w.down->value.data(), I, s.act.data());
  swiglu_backward(s.act.data(), act.gate.data(), act.up.data(), rows * I, s.gate.data(),
                  s.up.data());
  ops::linear_backward_weight(s.gate.data(), rows, I, x, H, w.gate->grad.data());
  ops::linear_backward_weight(s.up.data(), rows, I, x, H, w.up->grad.data());
  ops::linear_backward_input(s.gate.data(), rows, I, w.gate->value.data(), H, dx, accumulate_dx);
  ops::linear_backward_input(s.up.data(), rows, I, w.up->value.data(), H, dx, true);
}

}  // namespace sy::train
