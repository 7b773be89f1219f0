// The backward pass through the layers, in reverse operator order (operator 2l + 1: layer l's
// FFN half, 2l: its attention; stream point p: the residual stream just before operator p).
// An MoE layer's routed branch runs its backward in three steps like its forward: it starts at
// the combine (inside operator 2m + 1, the output gradients leave for the experts' owners), its
// experts' backward runs before one operator of the window, and it finishes where its input
// gradient is due -- before the FFN norm's backward without a shortcut, on arrival at the
// shortcut's stream point with one (ScMoE). Between start and finish the exchanges progress
// while the shared expert's, the norms' and the attention's backward compute. The slot is
// chosen as in the forward (model/overlap_schedule.h), from measured backward times.
#include <chrono>

#include "model/overlap_schedule.h"
#include "ops/elementwise.h"
#include "train/row_ops.h"
#include "train/train_model.h"
#include "util/phase_times.h"

namespace sy::train {

void TrainModel::backward_layers(int64_t B, int64_t S, const MoeTrainOptions& opt) {
  const model::ModelConfig& c = config_;
  const int64_t T = B * S, H = c.hidden_size;
  const int num_layers = int(c.num_layers);
  std::vector<float>&dx = ws_.dx, &df = ws_.df;
  df.resize(size_t(T * H));
  ws_.op_seconds.resize(size_t(2 * num_layers), 0.0);
  ExpertCompute& experts = *opt.experts;
  // Per branch in flight: the backward operator its experts precede, -2 at its finish, -1 ran.
  std::vector<int64_t> compute_before(size_t(num_layers), -1);
  std::vector<bool> in_flight(size_t(num_layers), false);

  auto options_of = [&](int m) {
    MoeTrainOptions o = opt;
    o.layer = m;
    return o;
  };
  auto measured = [&](int64_t op, double seconds) {  // running average, recent calls weigh most
    double& avg = ws_.op_seconds[size_t(op)];
    avg = avg == 0 ? seconds : 0.7 * avg + 0.3 * seconds;
  };
  // The stream point where layer m's routed branch's gradient is due.
  auto due_point = [&](int m) {
    return layers_[size_t(m)].shortcut_norm ? c.shortcut_point(m) : 2 * int64_t(m) + 1;
  };
  auto run_experts = [&](int m) {
    PhaseTimer t(profile_, "moe bwd");
    experts.backward_compute(m);
    compute_before[size_t(m)] = -1;
  };
  // Before backward operator `op`: exchanges in flight progress; branches whose slot is here
  // run their experts' backward.
  auto before_operator = [&](int64_t op) {
    for (int m = 0; m < num_layers; ++m) {
      if (!in_flight[size_t(m)]) continue;
      if (compute_before[size_t(m)] == op)
        run_experts(m);
      else
        experts.backward_progress(m);
    }
  };
  auto start_branch = [&](int m) {
    PhaseTimer t(profile_, "moe bwd");
    const model::LayerRecord& R = records_[size_t(m)];
    routed_backward_start(layers_[size_t(m)].moe, options_of(m), T, R.moe, dx.data(),
                          ws_.moe[m % 2]);
    in_flight[size_t(m)] = true;
    // The window: backward operators 2m + 1 down to the due point, in the order they run.
    std::vector<double> window;
    for (int64_t op = 2 * int64_t(m) + 1; op >= std::max<int64_t>(0, due_point(m)); --op)
      window.push_back(ws_.op_seconds[size_t(op)]);
    const moe::ExchangeEstimate est = experts.backward_estimate(m);
    // Blocking exchanges: the experts right away on every rank (one order of collectives).
    const int slot = experts.blocking() ? 0
                                        : model::choose_expert_slot(window, est.dispatch_s,
                                                                    est.combine_s, est.known);
    compute_before[size_t(m)] =
        slot < int(window.size()) ? 2 * int64_t(m) + 1 - slot : -2;  // -2: at finish
  };
  // Layer m's input gradient from its routed branch -> dxr (ws_.dxr).
  auto finish_branch = [&](int m) {
    if (compute_before[size_t(m)] != -1) run_experts(m);
    PhaseTimer t(profile_, "moe bwd");
    const model::LayerRecord& R = records_[size_t(m)];
    const bool shortcut = layers_[size_t(m)].shortcut_norm != nullptr;
    ws_.dxr.resize(size_t(T * H));
    routed_backward_finish(layers_[size_t(m)].moe, options_of(m),
                           shortcut ? R.moe.routed_in.data() : R.ffn_in.data(), T, R.moe,
                           acts_[size_t(m)].moe_act, ws_.moe[m % 2], ws_.dxr.data());
    in_flight[size_t(m)] = false;
  };
  // Arriving at stream point p: the shortcut branches read there add their gradient through
  // their own RMSNorm.
  auto arrive = [&](int64_t point) {
    for (int m = 0; m < num_layers; ++m) {
      const LayerParams& L = layers_[size_t(m)];
      if (!in_flight[size_t(m)] || !L.shortcut_norm || due_point(m) != point) continue;
      finish_branch(m);
      const model::LayerRecord& R = records_[size_t(m)];
      PhaseTimer t(profile_, "moe bwd");
      rmsnorm_backward(ws_.dxr.data(), R.shortcut_src.data(), L.shortcut_norm->value.data(),
                       R.shortcut_rstd.data(), T, H, dx.data(), L.shortcut_norm->grad.data(), true);
    }
  };

  for (int l = num_layers - 1; l >= 0; --l) {
    const LayerParams& L = layers_[size_t(l)];
    const model::LayerRecord& R = records_[size_t(l)];
    const int64_t op = 2 * int64_t(l) + 1;
    if (L.is_moe) {
      start_branch(l);
      before_operator(op);
      const auto t0 = std::chrono::steady_clock::now();
      PhaseTimer shared_time(profile_, "moe bwd");
      std::fill(df.begin(), df.end(), 0.0f);
      shared_backward(L.moe, R.ffn_in.data(), T, R.moe, dx.data(), df.data());
      shared_time.stop();
      double own_s = seconds_since(t0);
      if (!L.shortcut_norm) {
        finish_branch(l);
        ops::add(ws_.dxr.data(), T * H, df.data());
      }
      const auto t1 = std::chrono::steady_clock::now();
      PhaseTimer norm_time(profile_, "moe bwd");
      rmsnorm_backward(df.data(), R.x_mid.data(), L.ffn_norm->value.data(), R.rstd.data(), T, H,
                       dx.data(), L.ffn_norm->grad.data(), true);
      norm_time.stop();
      measured(op, own_s + seconds_since(t1));
    } else {
      before_operator(op);
      const auto t0 = std::chrono::steady_clock::now();
      PhaseTimer pt(profile_, "dense ffn bwd");
      ffn_train_backward(L.dense, R.ffn_in.data(), T, R.dense, dx.data(), df.data(), false,
                         ws_.ffn_scratch);
      rmsnorm_backward(df.data(), R.x_mid.data(), L.ffn_norm->value.data(), R.rstd.data(), T, H,
                       dx.data(), L.ffn_norm->grad.data(), true);
      pt.stop();
      measured(op, seconds_since(t0));
    }
    arrive(op);

    before_operator(op - 1);
    const auto t0 = std::chrono::steady_clock::now();
    PhaseTimer pt(profile_, "attention bwd");
    attention_backward_layer(l, B, S, dx.data());
    pt.stop();
    measured(op - 1, seconds_since(t0));
    arrive(op - 1);
  }
}

}  // namespace sy::train
