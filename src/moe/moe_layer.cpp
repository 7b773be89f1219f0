#include "moe/moe_layer.h"

#include <algorithm>
#include <chrono>
#include <cmath>

#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/threads.h"
#include "util/splitmix64.h"

namespace sy::moe {

namespace {

// Load-aware thresholds (DualSparse-MoE): each expert's factor min(1, its device's load / the
// balanced load), from the whole call's routing -- every rank's under mpirun, so every rank
// calls this once per layer call, with zero pairs too. Empty when not in use.
std::vector<float> threshold_scale(const MoeRuntime& rt, int E, const int32_t* ids,
                                   int64_t num_pairs) {
  if (rt.capacity.policy != CapacityPolicy::kThreshold || !rt.capacity.load_aware ||
      rt.placement.empty() || rt.placement.num_devices() < 2)
    return {};
  std::vector<int64_t> counts(static_cast<size_t>(E), 0);
  for (int64_t i = 0; i < num_pairs; ++i)
    if (ids[i] != kDroppedExpert) ++counts[size_t(ids[i])];
  if (rt.sum_counts) rt.sum_counts(counts);
  const int devices = rt.placement.num_devices();
  std::vector<int64_t> load(static_cast<size_t>(devices), 0);
  int64_t total = 0;
  for (int e = 0; e < E; ++e) {
    load[size_t(rt.placement.device_of(e))] += counts[size_t(e)];
    total += counts[size_t(e)];
  }
  std::vector<float> scale(static_cast<size_t>(E), 1.0f);
  const double balanced = double(total) / devices;
  if (balanced > 0)
    for (int e = 0; e < E; ++e)
      scale[size_t(e)] =
          float(std::min(1.0, double(load[size_t(rt.placement.device_of(e))]) / balanced));
  return scale;
}

}  // namespace

// Capacity is a per-device constraint on that device's own tokens (before any all-to-all),
// so each device's contiguous token slice goes through the policy on its own.
void apply_capacity_per_device(const MoeRuntime& rt, const RouterConfig& rc, int layer, int64_t T,
                               const float* scores, const int32_t* router_ids,
                               const float* router_weights, int slots, int32_t* ids, float* weights,
                               CapacityOutcome& outcome) {
  const int E = rc.num_experts, K = rc.top_k;
  const bool one_source = rt.placement.empty() || rt.source_device >= 0;
  const int D = one_source ? 1 : rt.placement.num_devices();
  const std::vector<float> scale = threshold_scale(rt, E, router_ids, T * K);
  for (int d = 0; d < D; ++d) {
    const int64_t begin = one_source ? 0 : rt.placement.token_begin(d, T);
    const int64_t end = one_source ? T : rt.placement.token_begin(d + 1, T);
    const int device = rt.placement.empty() ? 0 : rt.source_device >= 0 ? rt.source_device : d;
    const CapacityCall call{
        splitmix64(rt.forward_calls ^ splitmix64(uint64_t(layer) * 65537u + uint64_t(device))),
        rt.decode_step, scale.empty() ? nullptr : scale.data()};
    apply_capacity(rt.capacity, rc, scores + begin * E, router_ids + begin * K,
                   router_weights + begin * K, end - begin, rt.placement, device, call,
                   ids + begin * slots, weights + begin * slots, slots, outcome);
  }
}

namespace {

// The in-process routed branch: rows grouped by expert (plan, permuted), run by `experts` when
// given (training's, started here), else each expert in turn at routed_compute.
void dispatch_local(const MoeBlock& b, const RoutedPairs& p, MoeScratch& s,
                    GroupedExperts* experts) {
  const int64_t H = p.hidden;
  plan_dispatch(p.ids, p.weights, p.num_tokens, p.slots, b.router->num_experts, s.plan);
  s.plan.scale_inputs = b.scale_inputs;
  s.permuted.resize(size_t(s.plan.num_rows() * H));
  s.expert_out.resize(s.permuted.size());
  gather_rows(s.plan, p.x, H, s.permuted.data());
  if (experts)
    experts->start(b, p.layer, s.plan.offsets, s.permuted.data(), H, s.expert_out.data());
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// ReaLB in one process: every device of the placement decides as its rank would under mpirun
// (the same loads: this call's tokens are the step's), converts its experts when it runs low,
// and the records say what each device's experts took. Nothing is in flight here, so no
// conversion is hidden.
void compute_local_precision(const MoeBlock& b, MoeScratch& s, const MoeRuntime& rt) {
  const int64_t H = s.pairs.hidden;
  const int E = b.router->num_experts;
  std::vector<int64_t> rows(size_t(E), 0), tagged;
  if (s.pairs.tags) tagged.assign(size_t(E), 0);
  for (int e = 0; e < E; ++e) {
    rows[size_t(e)] = s.plan.rows_of(e);
    if (s.pairs.tags)
      for (int64_t r = s.plan.offsets[size_t(e)]; r < s.plan.offsets[size_t(e) + 1]; ++r)
        tagged[size_t(e)] += s.pairs.tags[s.plan.token[size_t(r)]];
  }
  const DeviceLoads loads = device_loads(rt.placement, rows, tagged, s.pairs.num_tokens);
  const int D = int(loads.rows.size());
  const double mean = double(s.plan.num_rows()) / D;
  std::vector<PrecisionRecord> records(static_cast<size_t>(D));
  s.low.begin();
  for (int d = 0; d < D; ++d) {
    const PrecisionChoice c = choose_precision(rt.precision, loads, d);
    PrecisionRecord& rec = records[size_t(d)];
    rec = {s.pairs.layer,
           d,
           c.low,
           loads.rows[size_t(d)],
           mean > 0 ? double(loads.rows[size_t(d)]) / mean : 0.0,
           0,
           0,
           0,
           c.why,
           c.reason};
  }
  for (int e = 0; e < E; ++e) {
    const int64_t begin = s.plan.offsets[size_t(e)];
    if (rows[size_t(e)] == 0) continue;
    PrecisionRecord& rec = records[size_t(rt.placement.empty() ? 0 : rt.placement.device_of(e))];
    auto t0 = std::chrono::steady_clock::now();
    const FfnWeights& w =
        rec.low ? s.low.convert(b.experts[size_t(e)], rt.precision.format, ops::num_threads())
                : b.experts[size_t(e)];
    rec.convert_s += seconds_since(t0);
    t0 = std::chrono::steady_clock::now();
    ffn_forward(w, s.permuted.data() + begin * H, rows[size_t(e)], s.expert_out.data() + begin * H,
                s.ffn);
    rec.expert_s += seconds_since(t0);
  }
  if (rt.precision_log)
    rt.precision_log->insert(rt.precision_log->end(), records.begin(), records.end());
}

void compute_local(const MoeBlock& b, MoeScratch& s, const MoeRuntime& rt) {
  const int64_t H = s.pairs.hidden;
  const int E = b.router->num_experts;
  if (rt.precision.tracked() && !b.offload) return compute_local_precision(b, s, rt);
  if (b.offload) {  // the experts with rows, streamed in the order they run
    std::vector<int> needed;
    for (int e = 0; e < E; ++e)
      if (s.plan.rows_of(e) > 0) needed.push_back(e);
    b.offload->begin_layer(s.pairs.layer, needed);
    for (int e : needed) {
      const int64_t begin = s.plan.offsets[size_t(e)];
      const FfnWeights& w = b.offload->acquire(s.pairs.layer, e);
      ffn_forward(w, s.permuted.data() + begin * H, s.plan.rows_of(e),
                  s.expert_out.data() + begin * H, s.ffn);
      b.offload->release(s.pairs.layer, e);
    }
    return;
  }
  for (int e = 0; e < E; ++e) {  // one matmul chain per expert
    const int64_t begin = s.plan.offsets[size_t(e)], rows = s.plan.rows_of(e);
    if (rows == 0) continue;
    ffn_forward(b.experts[size_t(e)], s.permuted.data() + begin * H, rows,
                s.expert_out.data() + begin * H, s.ffn);
  }
}

}  // namespace

void routed_start(const MoeBlock& b, const float* x, int64_t T, int64_t H, MoeScratch& s,
                  const MoeRuntime& rt, int layer) {
  const RouterConfig& rc = *b.router;
  const int E = rc.num_experts, K = rc.top_k;
  if (T == 0) {  // nothing to route, but a distributed backend's collectives still need us
    static const int32_t kNone = kDroppedExpert;
    (void)threshold_scale(rt, E, &kNone, 0);  // its collective, if any
    s.pairs = RoutedPairs{layer, 0, H, 1, x, &kNone, nullptr};
    if (rt.backend)
      rt.backend->start(b, s.pairs, s);
    else if (rt.experts)
      dispatch_local(b, s.pairs, s, rt.experts);
    return;
  }

  const auto route_start = std::chrono::steady_clock::now();
  // 1. Router: logits [T, G] in float32 (G = E, or the whole experts of a partial partition),
  // then probabilities, top-k ids and weights.
  const int G = rc.num_logits();
  s.logits.resize(size_t(T * G));
  ops::sgemm_nt(T, G, H, x, H, b.router_weight, H, s.logits.data(), G);
  if (b.router_bias)
    for (int64_t t = 0; t < T; ++t) ops::add(b.router_bias, G, s.logits.data() + t * G);
  s.scores.resize(size_t(T * E));
  s.router_ids.resize(size_t(T * K));
  s.router_weights.resize(size_t(T * K));
  if (b.noise_weight && rt.noise_step >= 0) {  // noisy top-k gating: select on logits + noise
    s.noise_logits.resize(size_t(T * G));
    s.noise.resize(size_t(T * G));
    s.noisy.resize(size_t(T * G));
    ops::sgemm_nt(T, G, H, x, H, b.noise_weight, H, s.noise_logits.data(), G);
    route_noisy(rc, s.logits.data(), s.noise_logits.data(), T, rt.noise_seed,
                uint64_t(rt.noise_step * rt.noise_layers + layer), s.router_ids.data(),
                s.router_weights.data(), s.scores.data(), s.noise.data());
    for (int64_t i = 0; i < T * G; ++i)
      s.noisy[size_t(i)] = s.logits[size_t(i)] + s.noise[size_t(i)];
  } else {
    s.noisy.clear();
    route(rc, s.logits.data(), T, b.selection_bias, s.router_ids.data(), s.router_weights.data(),
          s.scores.data());
  }

  // 2. Capacity policy: which (token, expert) pairs survive; dropped ones get kDroppedExpert.
  const int slots = capacity_slots(rt.capacity, K, E, rt.placement);
  s.ids.resize(size_t(T * slots));
  s.weights.resize(size_t(T * slots));
  s.outcome.reset(E);
  apply_capacity_per_device(rt, rc, layer, T, s.scores.data(), s.router_ids.data(),
                            s.router_weights.data(), slots, s.ids.data(), s.weights.data(),
                            s.outcome);
  if (rt.stats) rt.stats->record(layer, s.outcome);
  if (rt.observer)
    rt.observer->observe({layer, T, E, K, slots, s.scores.data(), s.router_ids.data(),
                          s.router_weights.data(), s.ids.data(), s.weights.data(), x, H});

  // 3. Dispatch begins: on the experts' owners, or here at routed_compute.
  const double route_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - route_start).count();
  s.pairs = RoutedPairs{layer, T, H, slots, x, s.ids.data(), s.weights.data(), route_s};
  if (int64_t(rt.token_tags.size()) == T) s.pairs.tags = rt.token_tags.data();
  if (rt.backend)
    rt.backend->start(b, s.pairs, s);
  else
    dispatch_local(b, s.pairs, s, rt.experts);
}

void routed_progress(const MoeRuntime& rt, int layer) {
  if (rt.backend)
    rt.backend->progress(layer);
  else if (rt.experts)
    rt.experts->progress(layer);
}

void routed_compute(const MoeBlock& b, MoeScratch& s, const MoeRuntime& rt, int layer) {
  if (rt.backend)
    rt.backend->compute(layer);
  else if (rt.experts)
    rt.experts->compute(layer);
  else if (s.pairs.num_tokens > 0)
    compute_local(b, s, rt);
}

void routed_finish(MoeScratch& s, const MoeRuntime& rt, int layer) {
  const int64_t T = s.pairs.num_tokens, H = s.pairs.hidden;
  s.routed_out.assign(size_t(T * H), 0.0f);
  if (rt.backend) {
    rt.backend->finish(layer, s.routed_out.data());
    return;
  }
  if (rt.experts) rt.experts->finish(layer);
  if (T > 0) combine_rows(s.plan, s.expert_out.data(), H, s.routed_out.data());
}

ExchangeEstimate routed_estimate(const MoeRuntime& rt, int layer) {
  if (rt.backend) return rt.backend->estimate(layer);
  if (rt.experts) return rt.experts->estimate(layer);
  return {0, 0, true};
}

bool routed_blocking(const MoeRuntime& rt) {
  return rt.backend ? rt.backend->blocking() : rt.experts && rt.experts->blocking();
}

void shared_forward(const MoeBlock& b, const float* x, int64_t T, int64_t H, MoeScratch& s) {
  s.shared_gate.assign(size_t(T), 1.0f);
  s.routed_gate.clear();
  if (!b.shared || T == 0) return;
  s.shared_out.resize(size_t(T * H));
  ffn_forward(*b.shared, x, T, s.shared_out.data(), s.shared_ffn);
  if (b.shared_gate) {  // CG-1 / Qwen2-MoE: sigmoid(g . x) on the shared expert
    for (int64_t t = 0; t < T; ++t) {
      double dot = 0;
      for (int64_t i = 0; i < H; ++i) dot += double(b.shared_gate[i]) * x[t * H + i];
      s.shared_gate[size_t(t)] = 1.0f / (1.0f + std::exp(-float(dot)));
    }
  }
  if (b.combine_gate) {  // CG-2: [alpha, beta] = softmax(C x)
    s.routed_gate.resize(size_t(T));
    for (int64_t t = 0; t < T; ++t) {
      double z0 = 0, z1 = 0;
      for (int64_t i = 0; i < H; ++i) {
        z0 += double(b.combine_gate[i]) * x[t * H + i];
        z1 += double(b.combine_gate[H + i]) * x[t * H + i];
      }
      const double m = std::max(z0, z1), e0 = std::exp(z0 - m), e1 = std::exp(z1 - m);
      s.shared_gate[size_t(t)] = float(e0 / (e0 + e1));
      s.routed_gate[size_t(t)] = float(e1 / (e0 + e1));
    }
  }
}

void combine_branches(const MoeBlock& b, int64_t T, int64_t H, const MoeScratch& s, float* out) {
  const bool gated = !s.routed_gate.empty();
  for (int64_t t = 0; t < T; ++t) {
    const float gr = gated ? s.routed_gate[size_t(t)] : 1.0f, gs = s.shared_gate[size_t(t)];
    const float* r = s.routed_out.data() + t * H;
    float* o = out + t * H;
    if (b.shared) {
      const float* sh = s.shared_out.data() + t * H;
      for (int64_t i = 0; i < H; ++i) o[i] = gr * r[i] + gs * sh[i];
    } else {
      for (int64_t i = 0; i < H; ++i) o[i] = gr * r[i];
    }
  }
}

void moe_forward(const MoeBlock& b, const float* x, int64_t T, int64_t H, float* out, MoeScratch& s,
                 const MoeRuntime& rt, int layer) {
  routed_start(b, x, T, H, s, rt, layer);
  routed_compute(b, s, rt, layer);
  routed_finish(s, rt, layer);
  shared_forward(b, x, T, H, s);
  combine_branches(b, T, H, s, out);
}

}  // namespace sy::moe
