#include "train/ffn_grad.h"

#include "ops/elementwise.h"
#include "train/linear.h"
#include "train/row_ops.h"

namespace sy::train {

void ffn_train_forward(const FfnParams& w, const float* x, int64_t rows, FfnActivations& act,
                       float* y) {
  const int64_t H = w.hidden(), I = w.intermediate();
  act.g.resize(size_t(rows * I));
  act.u.resize(size_t(rows * I));
  act.h.resize(size_t(rows * I));
  linear_forward(x, rows, H, w.gate->value.data(), I, act.g.data());
  linear_forward(x, rows, H, w.up->value.data(), I, act.u.data());
  ops::swiglu(act.g.data(), act.u.data(), rows * I, act.h.data());
  linear_forward(act.h.data(), rows, I, w.down->value.data(), H, y);
}

void ffn_train_backward(const FfnParams& w, const float* x, int64_t rows, const FfnActivations& act,
                        const float* dy, float* dx, bool accumulate_dx, FfnActivations& s) {
  const int64_t H = w.hidden(), I = w.intermediate();
  s.h.resize(size_t(rows * I));
  s.g.resize(size_t(rows * I));
  s.u.resize(size_t(rows * I));
  linear_backward_weight(dy, rows, H, act.h.data(), I, w.down->grad.data());
  linear_backward_input(dy, rows, H, w.down->value.data(), I, s.h.data());
  swiglu_backward(s.h.data(), act.g.data(), act.u.data(), rows * I, s.g.data(), s.u.data());
  linear_backward_weight(s.g.data(), rows, I, x, H, w.gate->grad.data());
  linear_backward_weight(s.u.data(), rows, I, x, H, w.up->grad.data());
  linear_backward_input(s.g.data(), rows, I, w.gate->value.data(), H, dx, accumulate_dx);
  linear_backward_input(s.u.data(), rows, I, w.up->value.data(), H, dx, true);
}

}  // namespace sy::train
