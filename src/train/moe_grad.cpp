#include "train/moe_grad.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/capacity.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "train/router_grad.h"

namespace sy::train {

namespace {

// Expert indices by descending row count (ties: lower index first), so the dynamic schedule
// starts the big experts first and the threads finish together.
std::vector<int64_t> largest_first(const std::vector<int64_t>& offsets) {
  std::vector<int64_t> order(offsets.size() - 1);
  for (size_t e = 0; e < order.size(); ++e) order[e] = int64_t(e);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
    return offsets[size_t(a) + 1] - offsets[size_t(a)] >
           offsets[size_t(b) + 1] - offsets[size_t(b)];
  });
  return order;
}

}  // namespace

void LocalExperts::forward(const MoeParams& p, int layer, const std::vector<int64_t>& offsets,
                           const float* xe, int64_t H, float* ye) {
  if (int(layers_.size()) <= layer) layers_.resize(size_t(layer + 1));
  Layer& L = layers_[size_t(layer)];
  L.xe = xe;
  L.act.resize(p.experts.size());
  // Experts run concurrently, each product single-threaded (nested regions are serial): the
  // result of every expert does not depend on which thread ran it.
  const std::vector<int64_t> order = largest_first(offsets);
  const int64_t E = int64_t(order.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < E; ++i) {
    const int64_t e = order[size_t(i)];
    const int64_t r0 = offsets[size_t(e)], n = offsets[size_t(e) + 1] - r0;
    if (n > 0)
      ffn_train_forward(p.experts[size_t(e)], xe + r0 * H, n, L.act[size_t(e)], ye + r0 * H);
  }
}

void LocalExperts::backward(const MoeParams& p, int layer, const std::vector<int64_t>& offsets,
                            const float* dye, int64_t H, float* dxe) {
  Layer& L = layers_.at(size_t(layer));
  const int64_t E = int64_t(p.experts.size());
  if (int64_t(scratch_.size()) < E) scratch_.resize(size_t(E));
  const std::vector<int64_t> order = largest_first(offsets);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < E; ++i) {
    const int64_t e = order[size_t(i)];
    const int64_t r0 = offsets[size_t(e)], n = offsets[size_t(e) + 1] - r0;
    if (n > 0)
      ffn_train_backward(p.experts[size_t(e)], L.xe + r0 * H, n, L.act[size_t(e)], dye + r0 * H,
                         dxe + r0 * H, false, scratch_[size_t(e)]);
  }
}

void moe_train_forward(const MoeParams& p, const MoeTrainOptions& opt, const float* x, int64_t T,
                       MoeActivations& a, float* out) {
  const moe::RouterConfig& rc = *p.router;
  const int E = rc.num_experts, K = rc.top_k;
  const int64_t H = p.gate->shape[1];
  a.logits.resize(size_t(T * E));
  a.router_ids.resize(size_t(T * K));
  a.ids.resize(size_t(T * K));
  a.weights.resize(size_t(T * K));
  ops::linear_forward(x, T, H, p.gate->value.data(), E, a.logits.data());
  std::vector<float> router_weights(size_t(T * K));
  std::vector<float>& scores = a.scores;  // the capacity policy's pair priority, as in inference
  scores.resize(size_t(T * E));
  const bool noisy = p.noise && opt.noise_stream >= 0;
  if (noisy) {
    a.noise_logits.resize(size_t(T * E));
    a.noise.resize(size_t(T * E));
    a.noisy.resize(size_t(T * E));
    ops::linear_forward(x, T, H, p.noise->value.data(), E, a.noise_logits.data());
    moe::route_noisy(rc, a.logits.data(), a.noise_logits.data(), T, opt.noise_seed,
                     uint64_t(opt.noise_stream), a.router_ids.data(), router_weights.data(),
                     scores.data(), a.noise.data());
    for (int64_t i = 0; i < T * E; ++i)
      a.noisy[size_t(i)] = a.logits[size_t(i)] + a.noise[size_t(i)];
  } else {
    a.noisy.clear();
    route(rc, a.logits.data(), T, p.selection_bias ? p.selection_bias->value.data() : nullptr,
          a.router_ids.data(), router_weights.data(), scores.data());
  }

  // Capacity: score-priority drop on one device, the router's scores as priority.
  a.dropped = 0;
  a.capacity = 0;
  if (opt.capacity_factor > 0 && T > 0) {
    moe::CapacityConfig cc;
    cc.policy = moe::CapacityPolicy::kScore;
    cc.factor = opt.capacity_factor;
    cc.skip_single_token = false;
    moe::CapacityOutcome outcome;
    outcome.reset(E);
    moe::apply_capacity(cc, rc, scores.data(), a.router_ids.data(), router_weights.data(), T, {}, 0,
                        0, a.ids.data(), a.weights.data(), K, outcome);
    a.dropped = outcome.dropped;
    a.capacity = moe::expert_capacity(opt.capacity_factor, T, K, E);
  } else {
    a.ids = a.router_ids;
    a.weights = router_weights;
  }

  // Dispatch, experts, combine in expert order: moe/'s plan and kernels, as inference runs them.
  moe::DispatchPlan& plan = a.plan;
  moe::plan_dispatch(a.ids.data(), a.weights.data(), T, K, E, plan);
  const int64_t R = plan.num_rows();
  a.kept.assign(size_t(E), 0);
  for (int e = 0; e < E; ++e) a.kept[size_t(e)] = plan.rows_of(e);
  a.xe.resize(size_t(R * H));
  a.ye.resize(size_t(R * H));
  moe::gather_rows(plan, x, H, a.xe.data());
  opt.experts->forward(p, opt.layer, plan.offsets, a.xe.data(), H, a.ye.data());
  std::fill(out, out + T * H, 0.0f);
  moe::combine_rows(plan, a.ye.data(), H, out);

  if (p.has_shared()) {
    a.shared_y.resize(size_t(T * H));
    ffn_train_forward(p.shared, x, T, a.shared_act, a.shared_y.data());
    a.shared_gate.assign(size_t(T), 1.0f);
    if (p.shared_gate) {
      for (int64_t t = 0; t < T; ++t) {
        double dot = 0;
        for (int64_t i = 0; i < H; ++i)
          dot += double(p.shared_gate->value[size_t(i)]) * x[t * H + i];
        a.shared_gate[size_t(t)] = float(1.0 / (1.0 + std::exp(-dot)));
      }
    }
    for (int64_t t = 0; t < T; ++t) {
      const float g = a.shared_gate[size_t(t)];
      for (int64_t i = 0; i < H; ++i) out[t * H + i] += g * a.shared_y[size_t(t * H + i)];
    }
  }

  a.counts = expert_counts(a.router_ids.data(), T * K, E);
  int64_t global_tokens = T;
  if (opt.global) {
    opt.global->sum_counts(a.counts);
    global_tokens = opt.global->tokens;
  }
  const RouterLosses losses = router_losses(a.logits.data(), a.router_ids.data(), T, E, K, 0, 0,
                                            nullptr, a.counts.data(), global_tokens);
  a.aux = losses.aux;
  a.z = losses.z;
}

void moe_train_backward(const MoeParams& p, const MoeTrainOptions& opt, const float* x, int64_t T,
                        const MoeActivations& a, const float* d_out, float* dx) {
  const moe::RouterConfig& rc = *p.router;
  const int E = rc.num_experts, K = rc.top_k;
  const int64_t H = p.gate->shape[1];
  const int64_t R = a.plan.num_rows();

  MoeScratch local;
  MoeScratch& ws = opt.scratch ? *opt.scratch : local;
  // Combine: d y_r = w * d_out[t];  d w[t, j] = d_out[t] . y_r (0 for dropped slots)
  const moe::DispatchPlan& plan = a.plan;
  ws.dye.resize(size_t(R * H));
  ws.dweights.assign(size_t(T * K), 0.0f);
  float* dye = ws.dye.data();
  float* dweights = ws.dweights.data();
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < R; ++r) {
    const int64_t t = plan.token[size_t(r)];
    const float w = plan.weight[size_t(r)];
    const float* g = d_out + t * H;
    const float* y = a.ye.data() + r * H;
    float* dy = dye + r * H;
    for (int64_t i = 0; i < H; ++i) dy[i] = w * g[i];
    dweights[t * K + plan.slot[size_t(r)]] = ops::dot(g, y, H);
  }

  // Experts, then their input gradients back to the tokens (the adjoint of the gather).
  ws.dxe.resize(size_t(R * H));
  opt.experts->backward(p, opt.layer, plan.offsets, dye, H, ws.dxe.data());
  std::fill(dx, dx + T * H, 0.0f);
  moe::scatter_add_rows(plan, ws.dxe.data(), H, dx);

  // Router: combine weights and balancing losses -> logits -> x and the router weight.
  ws.dlogits.assign(size_t(T * E), 0.0f);
  float* dlogits = ws.dlogits.data();
  if (!a.noisy.empty()) {  // weights came from H = logits + noise: dH flows to both
    route_weights_backward(rc, a.noisy.data(), a.router_ids.data(), dweights, T, dlogits);
    std::vector<float> dnoise(size_t(T * E), 0.0f);
    noisy_gating_backward(a.noise_logits.data(), a.noise.data(), dlogits, T * E, dnoise.data());
    ops::linear_backward_weight(dnoise.data(), T, E, x, H, p.noise->grad.data());
    ops::linear_backward_input(dnoise.data(), T, E, p.noise->value.data(), H, dx, true);
  } else {
    route_weights_backward(rc, a.logits.data(), a.router_ids.data(), dweights, T, dlogits);
  }
  router_losses(a.logits.data(), a.router_ids.data(), T, E, K, opt.aux_scale, opt.z_scale, dlogits,
                a.counts.data(), opt.global ? opt.global->tokens : T);
  ops::linear_backward_weight(dlogits, T, E, x, H, p.gate->grad.data());
  ops::linear_backward_input(dlogits, T, E, p.gate->value.data(), H, dx, true);

  if (p.has_shared()) {
    std::vector<float> dys(size_t(T * H));
    for (int64_t t = 0; t < T; ++t) {
      const float g = a.shared_gate[size_t(t)];
      const float* d = d_out + t * H;
      for (int64_t i = 0; i < H; ++i) dys[size_t(t * H + i)] = g * d[i];
    }
    if (p.shared_gate) {
      float* dg = p.shared_gate->grad.data();
      const float* gw = p.shared_gate->value.data();
      for (int64_t t = 0; t < T; ++t) {
        double dot = 0;
        for (int64_t i = 0; i < H; ++i)
          dot += double(d_out[t * H + i]) * a.shared_y[size_t(t * H + i)];
        const float s = a.shared_gate[size_t(t)];
        const float dz = float(dot) * s * (1.0f - s);
        for (int64_t i = 0; i < H; ++i) {
          dg[i] += dz * x[t * H + i];
          dx[t * H + i] += dz * gw[i];
        }
      }
    }
    FfnActivations s2;
    ffn_train_backward(p.shared, x, T, a.shared_act, dys.data(), dx, true, s2);
  }
}

}  // namespace sy::train
