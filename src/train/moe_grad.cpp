#include "train/moe_grad.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "moe/capacity.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "train/router_grad.h"
#include "util/error.h"

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

void LocalExperts::start(const moe::MoeBlock& block, int layer, const std::vector<int64_t>& offsets,
                         const float* xe, int64_t H, float* ye) {
  if (int(layers_.size()) <= layer) layers_.resize(size_t(layer + 1));
  Layer& L = layers_[size_t(layer)];
  L.block = &block;
  L.offsets = offsets;
  L.xe = xe;
  L.ye = ye;
  L.hidden = H;
}

void LocalExperts::compute(int layer) {
  Layer& L = layers_.at(size_t(layer));
  const int64_t H = L.hidden;
  L.act.resize(L.block->experts.size());
  // Experts run concurrently, each product single-threaded (nested regions are serial): the
  // result of every expert does not depend on which thread ran it.
  const std::vector<int64_t> order = largest_first(L.offsets);
  const int64_t E = int64_t(order.size());
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < E; ++i) {
    const int64_t e = order[size_t(i)];
    const int64_t r0 = L.offsets[size_t(e)], n = L.offsets[size_t(e) + 1] - r0;
    if (n == 0) continue;
    L.act[size_t(e)].keep = true;
    moe::ffn_forward(L.block->experts[size_t(e)], L.xe + r0 * H, n, L.ye + r0 * H,
                     L.act[size_t(e)]);
  }
}

void LocalExperts::backward_start(const MoeParams& p, int layer, const float* dye, float* dxe) {
  Layer& L = layers_.at(size_t(layer));
  L.params = &p;
  L.dye = dye;
  L.dxe = dxe;
}

void LocalExperts::backward_compute(int layer) {
  Layer& L = layers_.at(size_t(layer));
  const int64_t E = int64_t(L.params->experts.size()), H = L.hidden;
  if (int64_t(scratch_.size()) < E) scratch_.resize(size_t(E));
  const std::vector<int64_t> order = largest_first(L.offsets);
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t i = 0; i < E; ++i) {
    const int64_t e = order[size_t(i)];
    const int64_t r0 = L.offsets[size_t(e)], n = L.offsets[size_t(e) + 1] - r0;
    if (n > 0)
      ffn_train_backward(L.params->experts[size_t(e)], L.xe + r0 * H, n, L.act[size_t(e)],
                         L.dye + r0 * H, L.dxe + r0 * H, false, scratch_[size_t(e)]);
  }
}

void bind_views(const MoeParams& p, MoeViews& v) {
  v.experts.clear();
  for (const FfnParams& f : p.experts) v.experts.push_back(weight_views(f));
  moe::MoeBlock& b = v.block;
  b = moe::MoeBlock{};
  b.router = p.router;
  b.router_weight = p.gate->value.data();
  b.selection_bias = p.selection_bias ? p.selection_bias->value.data() : nullptr;
  b.noise_weight = p.noise ? p.noise->value.data() : nullptr;
  b.experts = v.experts;
  if (p.has_shared()) {
    v.shared = weight_views(p.shared);
    b.shared = &v.shared;
    b.shared_gate = p.shared_gate ? p.shared_gate->value.data() : nullptr;
    b.combine_gate = p.combine_gate ? p.combine_gate->value.data() : nullptr;
  }
}

moe::MoeRuntime train_runtime(const MoeTrainOptions& opt) {
  moe::MoeRuntime rt;
  if (opt.capacity_factor > 0) {  // score-priority drop on one device, as the paper's Token Drop
    rt.capacity.policy = moe::CapacityPolicy::kScore;
    rt.capacity.factor = opt.capacity_factor;
    rt.capacity.skip_single_token = false;
  }
  rt.experts = opt.experts;
  rt.noise_seed = opt.noise_seed;
  rt.noise_step = opt.noise_step;
  rt.noise_layers = opt.noise_layers;
  return rt;
}

void moe_statistics(const MoeParams& p, const MoeTrainOptions& opt, int64_t T,
                    const moe::MoeScratch& fwd, MoeActivations& a) {
  const int E = p.router->num_experts, K = p.router->top_k;
  SY_ASSERT(fwd.plan.slots == K);  // training's policies keep the router's slots
  a.dropped = fwd.outcome.dropped;
  a.capacity = opt.capacity_factor > 0 ? moe::expert_capacity(opt.capacity_factor, T, K, E) : 0;
  a.kept.assign(size_t(E), 0);
  for (int e = 0; e < E; ++e) a.kept[size_t(e)] = fwd.plan.rows_of(e);
  a.counts = expert_counts(fwd.router_ids.data(), T * K, E);
  int64_t global_tokens = T;
  if (opt.global) {
    opt.global->sum_counts(a.counts);
    global_tokens = opt.global->tokens;
  }
  const RouterLosses losses = router_losses(fwd.logits.data(), fwd.router_ids.data(), T, E, K, 0, 0,
                                            nullptr, a.counts.data(), global_tokens);
  a.aux = losses.aux;
  a.z = losses.z;
}

void moe_train_forward(const MoeParams& p, const MoeTrainOptions& opt, const float* x, int64_t T,
                       moe::MoeScratch& fwd, MoeActivations& a, float* out) {
  MoeViews views;
  bind_views(p, views);
  fwd.shared_ffn.keep = true;  // the shared expert's activations are backward's
  moe::moe_forward(views.block, x, T, p.gate->shape[1], out, fwd, train_runtime(opt), opt.layer);
  moe_statistics(p, opt, T, fwd, a);
}

void routed_backward_start(const MoeParams& p, const MoeTrainOptions& opt, int64_t T,
                           const moe::MoeScratch& fwd, const float* d_out, MoeBackwardScratch& ws) {
  const int K = p.router->top_k;
  const int64_t H = p.gate->shape[1];
  const int64_t R = fwd.plan.num_rows();
  // The routed branch's output gradient: d_out, times CG-2's beta per token.
  const float* d_routed = d_out;
  if (!fwd.routed_gate.empty()) {
    ws.d_routed.resize(size_t(T * H));
    for (int64_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < H; ++i)
        ws.d_routed[size_t(t * H + i)] = fwd.routed_gate[size_t(t)] * d_out[t * H + i];
    d_routed = ws.d_routed.data();
  }
  // Combine: d y_r = w * d_routed[t];  d w[t, j] = d_routed[t] . y_r (0 for dropped slots)
  const moe::DispatchPlan& plan = fwd.plan;
  ws.dye.resize(size_t(R * H));
  ws.dweights.assign(size_t(T * K), 0.0f);
  float* dye = ws.dye.data();
  float* dweights = ws.dweights.data();
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t r = 0; r < R; ++r) {
    const int64_t t = plan.token[size_t(r)];
    const float w = plan.weight[size_t(r)];
    const float* g = d_routed + t * H;
    const float* y = fwd.expert_out.data() + r * H;
    float* dy = dye + r * H;
    for (int64_t i = 0; i < H; ++i) dy[i] = w * g[i];
    dweights[t * K + plan.slot[size_t(r)]] = ops::dot(g, y, H);
  }
  ws.dxe.resize(size_t(R * H));
  opt.experts->backward_start(p, opt.layer, dye, ws.dxe.data());
}

void routed_backward_finish(const MoeParams& p, const MoeTrainOptions& opt, const float* xr,
                            int64_t T, const moe::MoeScratch& fwd, const MoeActivations& a,
                            MoeBackwardScratch& ws, float* dxr) {
  const moe::RouterConfig& rc = *p.router;
  const int E = rc.num_experts, K = rc.top_k;
  const int64_t H = p.gate->shape[1];
  // The experts' input gradients back to the tokens (the adjoint of the gather).
  opt.experts->backward_finish(opt.layer);
  std::fill(dxr, dxr + T * H, 0.0f);
  moe::scatter_add_rows(fwd.plan, ws.dxe.data(), H, dxr);

  // Router: combine weights and balancing losses -> logits -> xr and the router weight.
  ws.dlogits.assign(size_t(T * E), 0.0f);
  float* dlogits = ws.dlogits.data();
  const float* dweights = ws.dweights.data();
  if (!fwd.noisy.empty()) {  // weights came from H = logits + noise: dH flows to both
    route_weights_backward(rc, fwd.noisy.data(), fwd.router_ids.data(), dweights, T, dlogits);
    std::vector<float> dnoise(size_t(T * E), 0.0f);
    noisy_gating_backward(fwd.noise_logits.data(), fwd.noise.data(), dlogits, T * E, dnoise.data());
    ops::linear_backward_weight(dnoise.data(), T, E, xr, H, p.noise->grad.data());
    ops::linear_backward_input(dnoise.data(), T, E, p.noise->value.data(), H, dxr, true);
  } else {
    route_weights_backward(rc, fwd.logits.data(), fwd.router_ids.data(), dweights, T, dlogits);
  }
  router_losses(fwd.logits.data(), fwd.router_ids.data(), T, E, K, opt.aux_scale, opt.z_scale,
                dlogits, a.counts.data(), opt.global ? opt.global->tokens : T);
  ops::linear_backward_weight(dlogits, T, E, xr, H, p.gate->grad.data());
  ops::linear_backward_input(dlogits, T, E, p.gate->value.data(), H, dxr, true);
}

void shared_backward(const MoeParams& p, const float* x, int64_t T, const moe::MoeScratch& fwd,
                     const float* d_out, float* dx) {
  if (!p.has_shared()) return;
  const int64_t H = p.gate->shape[1];
  std::vector<float> dys(size_t(T * H));
  for (int64_t t = 0; t < T; ++t) {
    const float g = fwd.shared_gate[size_t(t)];
    const float* d = d_out + t * H;
    for (int64_t i = 0; i < H; ++i) dys[size_t(t * H + i)] = g * d[i];
  }
  auto dot_rows = [&](const float* a_rows, int64_t t) {
    double dot = 0;
    for (int64_t i = 0; i < H; ++i) dot += double(d_out[t * H + i]) * a_rows[t * H + i];
    return dot;
  };
  if (p.shared_gate) {  // sigmoid gate on the shared expert (Qwen2-MoE, CG-1)
    float* dg = p.shared_gate->grad.data();
    const float* gw = p.shared_gate->value.data();
    for (int64_t t = 0; t < T; ++t) {
      const float s = fwd.shared_gate[size_t(t)];
      const float dz = float(dot_rows(fwd.shared_out.data(), t)) * s * (1.0f - s);
      for (int64_t i = 0; i < H; ++i) {
        dg[i] += dz * x[t * H + i];
        dx[t * H + i] += dz * gw[i];
      }
    }
  }
  if (p.combine_gate) {  // CG-2: [alpha, beta] = softmax(C x); softmax backward per token
    float* dc = p.combine_gate->grad.data();
    const float* cw = p.combine_gate->value.data();
    for (int64_t t = 0; t < T; ++t) {
      const double alpha = fwd.shared_gate[size_t(t)], beta = fwd.routed_gate[size_t(t)];
      const double da = dot_rows(fwd.shared_out.data(), t), db = dot_rows(fwd.routed_out.data(), t);
      const double mean = alpha * da + beta * db;
      const float dz0 = float(alpha * (da - mean)), dz1 = float(beta * (db - mean));
      for (int64_t i = 0; i < H; ++i) {
        dc[i] += dz0 * x[t * H + i];
        dc[H + i] += dz1 * x[t * H + i];
        dx[t * H + i] += dz0 * cw[i] + dz1 * cw[H + i];
      }
    }
  }
  FfnActivations s2;
  ffn_train_backward(p.shared, x, T, fwd.shared_ffn, dys.data(), dx, true, s2);
}

void moe_train_backward(const MoeParams& p, const MoeTrainOptions& opt, const float* xr,
                        const float* x, int64_t T, const moe::MoeScratch& fwd,
                        const MoeActivations& a, const float* d_out, float* dxr, float* dx) {
  MoeBackwardScratch local;
  MoeBackwardScratch& ws = opt.scratch ? *opt.scratch : local;
  routed_backward_start(p, opt, T, fwd, d_out, ws);
  opt.experts->backward_compute(opt.layer);
  routed_backward_finish(p, opt, xr, T, fwd, a, ws, dxr);
  if (dx != dxr) std::fill(dx, dx + T * p.gate->shape[1], 0.0f);
  shared_backward(p, x, T, fwd, d_out, dx);
}

}  // namespace sy::train
