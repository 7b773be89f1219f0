// Finite-difference checks of the trainer's router and MoE-block gradients (every score
// function, renormalisation, scaling, group-limited selection, capacity drop, shared expert),
// the balancing losses against their formulas written out here, and the data-parallel split
// of those losses. Central differences in double over float32 code: tolerances are relative
// to the largest gradient entry.
#include <gtest/gtest.h>

#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "finite_difference.h"
#include "moe/router.h"
#include "ops/threads.h"
#include "random_data.h"
#include "train/moe_grad.h"
#include "train/params.h"
#include "train/router_grad.h"

namespace sy::train {
namespace {

using moe::RouterConfig;
using moe::ScoreFunc;
using sy::testing::expect_grad_matches;

using sy::testing::randn;

struct RouterCase {
  const char* name;
  ScoreFunc score;
  bool renormalize;
  float scale;
  int groups, topk_groups;
  bool bias;
};

class RouteWeightsGrad : public ::testing::TestWithParam<RouterCase> {};

TEST_P(RouteWeightsGrad, MatchesFiniteDifferences) {
  const RouterCase c = GetParam();
  RouterConfig rc;
  rc.num_experts = 8;
  rc.top_k = 3;
  rc.score = c.score;
  rc.renormalize = c.renormalize;
  rc.routed_scaling_factor = c.scale;
  rc.num_groups = c.groups;
  rc.topk_groups = c.topk_groups;
  rc.has_selection_bias = c.bias;
  const int64_t T = 6, E = 8, K = 3;
  std::vector<float> logits = randn(size_t(T * E), 7, 2.0f);
  const std::vector<float> bias = randn(size_t(E), 8, 0.3f);
  const std::vector<float> dw = randn(size_t(T * K), 9);
  std::vector<int32_t> ids0(size_t(T * K)), ids(size_t(T * K));
  std::vector<float> w(size_t(T * K));
  moe::route(rc, logits.data(), T, c.bias ? bias.data() : nullptr, ids0.data(), w.data());
  auto f = [&] {
    moe::route(rc, logits.data(), T, c.bias ? bias.data() : nullptr, ids.data(), w.data());
    double s = 0;
    for (int64_t i = 0; i < T * K; ++i) s += double(dw[size_t(i)]) * w[size_t(i)];
    return s;
  };
  auto stable = [&] { return ids == ids0; };
  std::vector<float> g(size_t(T * E), 0.0f);
  route_weights_backward(rc, logits.data(), ids0.data(), dw.data(), T, g.data());
  expect_grad_matches(logits, g, f, stable, 1e-3, 2e-3, c.name);
}

INSTANTIATE_TEST_SUITE_P(
    AllScoreFunctions, RouteWeightsGrad,
    ::testing::Values(RouterCase{"softmax", ScoreFunc::kSoftmax, false, 1.0f, 1, 1, false},
                      RouterCase{"softmax_renorm", ScoreFunc::kSoftmax, true, 1.0f, 1, 1, false},
                      RouterCase{"sigmoid_renorm_scaled_groups_bias", ScoreFunc::kSigmoid, true,
                                 2.5f, 4, 2, true},
                      RouterCase{"sigmoid_plain", ScoreFunc::kSigmoid, false, 1.0f, 1, 1, false},
                      RouterCase{"softmax_topk", ScoreFunc::kSoftmaxTopK, false, 1.0f, 1, 1, false},
                      RouterCase{"sigmoid_topk_renorm", ScoreFunc::kSigmoidTopK, true, 1.0f, 1, 1,
                                 false}),
    [](const auto& info) { return std::string(info.param.name); });

// Noisy top-k: H = logits + eps * softplus(noise_logits), eps the router's seeded normal draws.
TEST(NoisyGating, NoiseGradientMatchesFiniteDifferences) {
  RouterConfig rc;
  rc.num_experts = 6;
  rc.top_k = 2;
  rc.score = ScoreFunc::kSoftmaxTopK;
  const int64_t T = 5, E = 6, K = 2;
  const std::vector<float> logits = randn(size_t(T * E), 31, 1.0f);
  std::vector<float> nl = randn(size_t(T * E), 32, 3.0f);  // wide range: softplus both regimes
  nl[0] = -30.0f;
  nl[1] = 25.0f;
  const std::vector<float> dH = randn(size_t(T * E), 33);
  std::vector<int32_t> ids(size_t(T * K));
  std::vector<float> w(size_t(T * K)), noise(size_t(T * E));
  moe::route_noisy(rc, logits.data(), nl.data(), T, 7, 3, ids.data(), w.data(), nullptr,
                   noise.data());
  auto f = [&] {  // sum dH * eps * softplus(nl), eps drawn as the router draws it
    double s = 0;
    for (int64_t i = 0; i < T * E; ++i) {
      const double eps = moe::noisy_gating_normal(7, 3, uint64_t(i));
      s += double(dH[size_t(i)]) * eps * std::log1p(std::exp(double(nl[size_t(i)])));
    }
    return s;
  };
  std::vector<float> g(size_t(T * E), 0.0f);
  noisy_gating_backward(nl.data(), noise.data(), dH.data(), T * E, g.data());
  expect_grad_matches(
      nl, g, f, [] { return true; }, 1e-3, 2e-3, "noise logits");
}

// L_aux = E * sum_i (count_i / (T k)) * mean_t p_ti and L_z = mean_t lse_t^2, written out here.
TEST(RouterLosses, ValuesMatchTheirFormulasAndGradientsMatchFiniteDifferences) {
  const int64_t T = 10, E = 6, K = 2;
  std::vector<float> logits = randn(size_t(T * E), 11, 1.5f);
  std::vector<int32_t> ids(size_t(T * K));
  for (int64_t t = 0; t < T; ++t) {  // any selection works: D has no gradient
    ids[size_t(t * K)] = int32_t(t % E);
    ids[size_t(t * K + 1)] = int32_t((t * 7 + 3) % E == t % E ? (t + 1) % E : (t * 7 + 3) % E);
  }
  double aux = 0, z = 0;
  std::vector<double> P(size_t(E), 0.0), counts(size_t(E), 0.0);
  for (int32_t id : ids) counts[size_t(id)] += 1;
  for (int64_t t = 0; t < T; ++t) {
    double mx = -1e30, s = 0;
    for (int64_t e = 0; e < E; ++e) mx = std::max(mx, double(logits[size_t(t * E + e)]));
    for (int64_t e = 0; e < E; ++e) s += std::exp(double(logits[size_t(t * E + e)]) - mx);
    for (int64_t e = 0; e < E; ++e)
      P[size_t(e)] += std::exp(double(logits[size_t(t * E + e)]) - mx) / s / double(T);
    z += std::pow(mx + std::log(s), 2) / double(T);
  }
  for (int64_t e = 0; e < E; ++e)
    aux += double(E) * counts[size_t(e)] / double(T * K) * P[size_t(e)];
  const RouterLosses l = router_losses(logits.data(), ids.data(), T, int(E), int(K), 0, 0, nullptr);
  EXPECT_NEAR(l.aux, aux, 1e-6);
  EXPECT_NEAR(l.z, z, 1e-5);
  for (int64_t e = 0; e < E; ++e) EXPECT_EQ(l.counts[size_t(e)], int64_t(counts[size_t(e)]));

  const float a = 0.7f, b = 0.3f;
  std::vector<float> g(size_t(T * E), 0.0f);
  router_losses(logits.data(), ids.data(), T, int(E), int(K), a, b, g.data());
  auto f = [&] {
    const RouterLosses r =
        router_losses(logits.data(), ids.data(), T, int(E), int(K), 0, 0, nullptr);
    return a * r.aux + b * r.z;
  };
  expect_grad_matches(
      logits, g, f, [] { return true; }, 1e-3, 2e-3, "aux + z");
}

// Balanced uniform routing gives L_aux = 1 exactly (the survey's normalisation).
TEST(RouterLosses, UniformBalancedIsOne) {
  const int64_t T = 8, E = 4, K = 2;
  std::vector<float> logits(size_t(T * E), 0.25f);
  std::vector<int32_t> ids(size_t(T * K));
  for (int64_t i = 0; i < T * K; ++i) ids[size_t(i)] = int32_t(i % E);
  EXPECT_NEAR(router_losses(logits.data(), ids.data(), T, int(E), int(K), 0, 0, nullptr).aux, 1.0,
              1e-7);
}

// Two halves of a batch with the whole batch's counts and token count add up to the whole.
TEST(RouterLosses, DataParallelSharesSumToTheWholeBatch) {
  const int64_t T = 12, E = 5, K = 2, half = T / 2;
  const std::vector<float> logits = randn(size_t(T * E), 21, 1.2f);
  std::vector<int32_t> ids(size_t(T * K));
  for (int64_t i = 0; i < T * K; ++i) ids[size_t(i)] = int32_t((i * 3 + i / 5) % E);
  std::vector<float> g_all(size_t(T * E), 0.0f), g_parts(size_t(T * E), 0.0f);
  const RouterLosses all =
      router_losses(logits.data(), ids.data(), T, int(E), int(K), 0.5f, 0.2f, g_all.data());
  const std::vector<int64_t> counts = expert_counts(ids.data(), T * K, int(E));
  double aux = 0, z = 0;
  for (int part = 0; part < 2; ++part) {
    const RouterLosses l =
        router_losses(logits.data() + part * half * E, ids.data() + part * half * K, half, int(E),
                      int(K), 0.5f, 0.2f, g_parts.data() + part * half * E, counts.data(), T);
    aux += l.aux;
    z += l.z;
  }
  EXPECT_NEAR(aux, all.aux, 1e-9);
  EXPECT_NEAR(z, all.z, 1e-9);
  for (size_t i = 0; i < g_all.size(); ++i) EXPECT_NEAR(g_parts[i], g_all[i], 1e-7);
}

// The whole MoE block (router -> top-k -> capacity drop -> experts -> combine + gated shared
// expert, with aux and z losses) against finite differences of
//   loss = sum(out * R) + aux_scale * L_aux + z_scale * L_z.
struct BlockCase {
  const char* name;
  double capacity;
  bool shared;
  bool noisy = false;
};

class MoeBlockGrad : public ::testing::TestWithParam<BlockCase> {};

TEST_P(MoeBlockGrad, MatchesFiniteDifferences) {
  ops::set_num_threads(1);  // hundreds of tiny products: threads only add wake-up latency
  const BlockCase c = GetParam();
  const int64_t T = 12, H = 8, I = 6, E = 4, K = 2;
  RouterConfig rc;
  rc.num_experts = int(E);
  rc.top_k = int(K);
  rc.score = ScoreFunc::kSoftmax;
  rc.renormalize = true;
  ParamSet ps;
  MoeParams p;
  p.router = &rc;
  uint32_t seed = 100;
  auto add = [&](const std::string& name, std::vector<int64_t> shape, float scale) {
    Param& q = ps.add(name, std::move(shape));
    q.value = randn(q.value.size(), seed++, scale);
    return &q;
  };
  p.gate = add("gate", {E, H}, 0.8f);
  for (int64_t e = 0; e < E; ++e) {
    const std::string n = "e" + std::to_string(e);
    p.experts.push_back({add(n + ".gate", {I, H}, 0.5f), add(n + ".up", {I, H}, 0.5f),
                         add(n + ".down", {H, I}, 0.5f)});
  }
  if (c.shared) {
    p.shared = {add("s.gate", {I, H}, 0.5f), add("s.up", {I, H}, 0.5f),
                add("s.down", {H, I}, 0.5f)};
    p.shared_gate = add("s.g", {1, H}, 0.5f);
  }
  if (c.noisy) p.noise = add("noise", {E, H}, 0.3f);
  std::vector<float> x = randn(size_t(T * H), 1, 1.0f);
  const std::vector<float> R = randn(size_t(T * H), 2, 1.0f);
  LocalExperts local;
  MoeTrainOptions opt;
  opt.capacity_factor = c.capacity;
  opt.aux_scale = 0.3f;
  opt.z_scale = 0.05f;
  opt.experts = &local;
  opt.noise_seed = 3;
  opt.noise_step = c.noisy ? 5 : -1;  // stream 5 (one layer)
  moe::MoeScratch fwd;
  MoeActivations act;
  std::vector<float> out(size_t(T * H));
  moe_train_forward(p, opt, x.data(), T, fwd, act, out.data());
  const std::vector<int32_t> ids0 = fwd.ids;
  if (c.capacity > 0) {
    EXPECT_GT(act.dropped, 0) << "the case should drop pairs";
  }
  auto f = [&] {
    moe::MoeScratch f;
    MoeActivations a;
    std::vector<float> o(size_t(T * H));
    moe_train_forward(p, opt, x.data(), T, f, a, o.data());
    double s = opt.aux_scale * a.aux + opt.z_scale * a.z;
    for (size_t i = 0; i < o.size(); ++i) s += double(o[i]) * R[i];
    return s;
  };
  auto stable = [&] {
    moe::MoeScratch f;
    MoeActivations a;
    std::vector<float> o(size_t(T * H));
    moe_train_forward(p, opt, x.data(), T, f, a, o.data());
    return f.ids == ids0;
  };
  std::vector<float> dx(size_t(T * H));
  moe_train_forward(p, opt, x.data(), T, fwd, act, out.data());
  moe_train_backward(p, opt, x.data(), T, fwd, act, R.data(), dx.data());
  expect_grad_matches(x, dx, f, stable, 1e-3, 3e-3, "d x");
  const std::vector<Param*> checked = {p.gate,
                                       p.experts[1].gate,
                                       p.experts[2].down,
                                       p.experts[3].up,
                                       c.shared ? p.shared_gate : p.gate,
                                       c.shared ? p.shared.down : p.gate,
                                       c.noisy ? p.noise : p.gate};
  for (Param* q : checked) {
    const std::vector<float> g = q->grad;
    expect_grad_matches(q->value, g, f, stable, 1e-3, 3e-3, q->name.c_str());
  }
}

INSTANTIATE_TEST_SUITE_P(Block, MoeBlockGrad,
                         ::testing::Values(BlockCase{"dropless", 0.0, false},
                                           BlockCase{"capacity_1_0", 1.0, false},
                                           BlockCase{"capacity_and_shared", 0.75, true},
                                           BlockCase{"noisy_gating", 0.0, false, true}),
                         [](const auto& info) { return std::string(info.param.name); });

}  // namespace
}  // namespace sy::train
