// moe_forward (src/moe/moe_layer.h) on tiny float32 experts against a scalar MoE written here
// in double precision: router logits, softmax/sigmoid, top-k, SwiGLU down(silu(gate x) * up x),
// weighted sum, plus the shared expert (optionally times sigmoid(gate . x)).
//
// Tolerance, per output element, from float32 rounding. An n-term dot product accumulated in
// float32 errs by about eps * sqrt(n) * sum |terms| (random-walk bound, as in ops_test; the
// worst case n eps proved ~300x loose here), so with growth(n) = sqrt(n) + 1:
//   FFN part:    (2 growth(H) + growth(I) + 4) eps * M, where M is the same computation with every
//                product replaced by its magnitude (sum over slots of w sum_j |down_ij| |a_j|..).
//   Router part: a logit error dl = growth(H) eps sum_h |W_eh x_h| moves a softmax weight by at
//                most 2 dl relative (sigmoid: dl), and the router itself adds (range + 8) eps;
//                times sum over slots of w |y|.
// No extra safety factor: the magnitude sums already overestimate (measured worst: under 2%
// of the bound), and a 1e-4 relative error in the combine weights is caught. Inputs whose
// top-k is decided by a relative gap under 1e-4 are redrawn, since float rounding may then
// legally pick a different expert.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <tuple>
#include <vector>

#include "moe/moe_layer.h"

namespace sy::moe {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();
constexpr double kSafety = 1;  // measured errors stay below 2% of the bound

double growth(int64_t n) {
  return std::sqrt(double(n)) + 1;
}  // rounding growth of an n-term sum

struct Matrix {  // [rows, cols] float32, row-major
  int64_t rows = 0, cols = 0;
  std::vector<float> v;
  ops::WeightView view() const { return ops::WeightView{DType::F32, rows, cols, v.data()}; }
  double at(int64_t r, int64_t c) const { return v[size_t(r * cols + c)]; }
};

Matrix random_matrix(int64_t rows, int64_t cols, std::mt19937& rng, float scale) {
  std::uniform_real_distribution<float> d(-scale, scale);
  Matrix m{rows, cols, std::vector<float>(static_cast<size_t>(rows * cols))};
  for (auto& x : m.v) x = d(rng);
  return m;
}

struct Expert {
  Matrix gate, up, down;  // [I, H], [I, H], [H, I]
  FfnWeights weights() const { return {gate.view(), up.view(), down.view()}; }
};

Expert random_expert(int64_t H, int64_t I, std::mt19937& rng) {
  const float s = 1.0f / std::sqrt(float(H));
  return {random_matrix(I, H, rng, 2 * s), random_matrix(I, H, rng, 2 * s),
          random_matrix(H, I, rng, 1.0f / std::sqrt(float(I)))};
}

// y = down(silu(gate x) * up x) in double; mag = the same with magnitudes (error scale).
void ref_ffn(const Expert& e, const float* x, std::vector<double>& y, std::vector<double>& mag) {
  const int64_t I = e.gate.rows, H = e.gate.cols;
  std::vector<double> a(static_cast<size_t>(I)), a_mag(static_cast<size_t>(I));
  for (int64_t j = 0; j < I; ++j) {
    double g = 0, u = 0, g_mag = 0, u_mag = 0;
    for (int64_t h = 0; h < H; ++h) {
      g += e.gate.at(j, h) * x[h], g_mag += std::abs(e.gate.at(j, h) * x[h]);
      u += e.up.at(j, h) * x[h], u_mag += std::abs(e.up.at(j, h) * x[h]);
    }
    const double silu = g / (1 + std::exp(-g));
    a[size_t(j)] = silu * u;
    // |d silu / dg| <= 1.1, so an error of g_mag eps in g moves a by <= 1.1 g_mag |u| eps.
    a_mag[size_t(j)] = 1.1 * g_mag * std::abs(u) + std::abs(silu) * u_mag + std::abs(silu * u);
  }
  y.assign(size_t(H), 0.0);
  mag.assign(size_t(H), 0.0);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < I; ++j) {
      y[size_t(h)] += e.down.at(h, j) * a[size_t(j)];
      mag[size_t(h)] += std::abs(e.down.at(h, j)) * a_mag[size_t(j)];
    }
}

struct Layer {
  RouterConfig router;
  int64_t H = 0, I = 0;
  Matrix router_w;  // [E, H]
  std::vector<float> bias;
  std::vector<Expert> experts;
  bool has_shared = false, shared_gated = false;
  Expert shared;
  std::vector<float> shared_gate;  // [H]
  std::vector<FfnWeights> views;

  MoeBlock block() {
    views.clear();
    for (const auto& e : experts) views.push_back(e.weights());
    MoeBlock b;
    b.router = &router;
    b.router_weight = router_w.v.data();
    b.selection_bias = router.has_selection_bias ? bias.data() : nullptr;
    b.experts = views;
    shared_views.assign(1, shared.weights());
    b.shared = has_shared ? &shared_views[0] : nullptr;
    b.shared_gate = shared_gated ? shared_gate.data() : nullptr;
    return b;
  }
  std::vector<FfnWeights> shared_views;
};

struct RefOut {
  std::vector<double> y, tol;  // [H]
  std::vector<int> ids;
  double min_gap = 1e300;  // relative gap deciding the selection
};

// One token through the reference MoE.
RefOut ref_moe(const Layer& L, const float* x) {
  const RouterConfig& c = L.router;
  const int E = c.num_experts, K = c.top_k;
  const int64_t H = L.H;
  std::vector<double> logit(static_cast<size_t>(E)), p(static_cast<size_t>(E)),
      choice(static_cast<size_t>(E));
  double max_dl = 0, range = 0;
  for (int e = 0; e < E; ++e) {
    double s = 0, s_mag = 0;
    for (int64_t h = 0; h < H; ++h)
      s += L.router_w.at(e, h) * x[h], s_mag += std::abs(L.router_w.at(e, h) * x[h]);
    logit[size_t(e)] = s;
    max_dl = std::max(max_dl, growth(H) * kEps * s_mag);
  }
  const double m = *std::max_element(logit.begin(), logit.end());
  double z = 0;
  for (int e = 0; e < E; ++e)
    z += std::exp(logit[size_t(e)] - m), range = std::max(range, std::abs(logit[size_t(e)] - m));
  for (int e = 0; e < E; ++e) {
    p[size_t(e)] = c.score == ScoreFunc::kSoftmax ? std::exp(logit[size_t(e)] - m) / z
                                                  : 1 / (1 + std::exp(-logit[size_t(e)]));
    choice[size_t(e)] = p[size_t(e)] + (c.has_selection_bias ? L.bias[size_t(e)] : 0.0);
  }
  RefOut r;
  if (c.num_groups > 1) {  // group score = sum of the top-2 choices; others masked to 0
    const int per = E / c.num_groups;
    std::vector<std::pair<double, int>> gs;
    for (int g = 0; g < c.num_groups; ++g) {
      std::vector<double> mem(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(mem.rbegin(), mem.rend());
      gs.push_back({-(per > 1 ? mem[0] + mem[1] : mem[0]), g});
    }
    std::stable_sort(gs.begin(), gs.end());
    for (int e = 0; e < E; ++e) {
      bool keep = false;
      for (int i = 0; i < c.topk_groups; ++i) keep |= gs[size_t(i)].second == e / per;
      if (!keep) choice[size_t(e)] = 0;
    }
    if (c.topk_groups < c.num_groups)
      r.min_gap =
          (gs[size_t(c.topk_groups)].first - gs[size_t(c.topk_groups - 1)].first) / -gs[0].first;
  }
  std::vector<int> order(static_cast<size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int a, int b) { return choice[size_t(a)] > choice[size_t(b)]; });
  if (K < E)
    r.min_gap = std::min(r.min_gap,
                         (choice[size_t(order[size_t(K - 1)])] - choice[size_t(order[size_t(K)])]) /
                             std::abs(choice[size_t(order[0])]));
  std::vector<double> w(static_cast<size_t>(K));
  double sum = 0;
  for (int i = 0; i < K; ++i)
    sum += (w[size_t(i)] = p[size_t(order[size_t(i)])]), r.ids.push_back(order[size_t(i)]);
  for (auto& wi : w)
    wi = (c.renormalize ? wi / (sum + c.renormalize_epsilon) : wi) * c.routed_scaling_factor;

  const double w_rel = (c.score == ScoreFunc::kSoftmax ? 2 : 1) * max_dl + (range + 8) * kEps;
  r.y.assign(size_t(H), 0.0);
  r.tol.assign(size_t(H), 0.0);
  std::vector<double> y, mag;
  for (int i = 0; i < K; ++i) {
    ref_ffn(L.experts[size_t(r.ids[size_t(i)])], x, y, mag);
    for (int64_t h = 0; h < H; ++h) {
      r.y[size_t(h)] += w[size_t(i)] * y[size_t(h)];
      r.tol[size_t(h)] +=
          w[size_t(i)] * ((2 * growth(H) + growth(L.I) + 4) * kEps * mag[size_t(h)] +
                          w_rel * std::abs(y[size_t(h)]));
    }
  }
  if (L.has_shared) {
    ref_ffn(L.shared, x, y, mag);
    double g = 1, g_tol = 0;
    if (L.shared_gated) {
      double d = 0, d_mag = 0;
      for (int64_t h = 0; h < H; ++h)
        d += L.shared_gate[size_t(h)] * x[h], d_mag += std::abs(L.shared_gate[size_t(h)] * x[h]);
      g = 1 / (1 + std::exp(-d));
      g_tol = (growth(H) * d_mag + 4) * kEps;  // sigmoid' <= 1/4, plus rounding
    }
    const int64_t Is = L.shared.gate.rows;
    for (int64_t h = 0; h < H; ++h) {
      r.y[size_t(h)] += g * y[size_t(h)];
      r.tol[size_t(h)] += g * (2 * growth(H) + growth(Is) + 4) * kEps * mag[size_t(h)] +
                          g_tol * std::abs(y[size_t(h)]);
    }
  }
  for (auto& t : r.tol) t *= kSafety;
  return r;
}

struct Spec {
  const char* name;
  int E, K;
  ScoreFunc score;
  bool renormalize;
  float scale;
  bool bias;
  int groups, topk_groups;
  bool shared, shared_gated;
  int64_t H, I;
};

Layer make_layer(const Spec& s, uint32_t seed) {
  std::mt19937 rng(seed);
  Layer L;
  L.H = s.H;
  L.I = s.I;
  L.router.num_experts = s.E;
  L.router.top_k = s.K;
  L.router.score = s.score;
  L.router.renormalize = s.renormalize;
  L.router.renormalize_epsilon = s.score == ScoreFunc::kSigmoid ? 1e-20f : 0.0f;
  L.router.routed_scaling_factor = s.scale;
  L.router.has_selection_bias = s.bias;
  L.router.num_groups = s.groups;
  L.router.topk_groups = s.topk_groups;
  L.router.group_score = GroupScore::kTop2Sum;
  L.router_w = random_matrix(s.E, s.H, rng, 2.0f / std::sqrt(float(s.H)));
  std::uniform_real_distribution<float> bd(-0.05f, 0.05f);
  for (int e = 0; e < s.E; ++e) L.bias.push_back(bd(rng));
  for (int e = 0; e < s.E; ++e) L.experts.push_back(random_expert(s.H, s.I, rng));
  L.has_shared = s.shared;
  L.shared_gated = s.shared_gated;
  L.shared = random_expert(s.H, 2 * s.I, rng);
  L.shared_gate = random_matrix(1, s.H, rng, 1.0f / std::sqrt(float(s.H))).v;
  return L;
}

// T tokens whose routing is decisively separated under the reference.
std::vector<float> draw_tokens(const Layer& L, int64_t T, uint32_t seed,
                               std::vector<RefOut>& refs) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(T * L.H));
  refs.clear();
  for (int64_t t = 0; t < T; ++t) {
    for (int attempt = 0;; ++attempt) {
      for (int64_t h = 0; h < L.H; ++h) x[size_t(t * L.H + h)] = d(rng);
      RefOut r = ref_moe(L, &x[size_t(t * L.H)]);
      if (r.min_gap >= 1e-4) {
        refs.push_back(std::move(r));
        break;
      }
      if (attempt > 200) throw std::runtime_error("cannot draw well-separated tokens");
    }
  }
  return x;
}

void expect_close(const std::vector<float>& out, const std::vector<RefOut>& refs, int64_t H,
                  const std::string& what) {
  double worst = 0;
  int64_t worst_t = -1, worst_h = -1;
  for (size_t t = 0; t < refs.size(); ++t)
    for (int64_t h = 0; h < H; ++h) {
      const double ratio =
          std::abs(out[t * size_t(H) + size_t(h)] - refs[t].y[size_t(h)]) / refs[t].tol[size_t(h)];
      if (!(ratio <= worst)) worst = ratio, worst_t = int64_t(t), worst_h = h;
    }
  if (worst_t >= 0) {
    const auto& r = refs[size_t(worst_t)];
    EXPECT_LE(worst, 1.0) << what << ": worst element token " << worst_t << " column " << worst_h
                          << ": got " << out[size_t(worst_t * H + worst_h)] << ", reference "
                          << r.y[size_t(worst_h)] << ", tolerance " << r.tol[size_t(worst_h)];
  }
}

const Spec kSpecs[] = {
    // name                                   E  K  score                renorm scale bias grp tkg
    // shared gated  H   I
    {"Mixtral: softmax top-2 renorm", 4, 2, ScoreFunc::kSoftmax, true, 1.0f, false, 1, 1, false,
     false, 16, 12},
    {"OLMoE: softmax top-1 no renorm", 6, 1, ScoreFunc::kSoftmax, false, 1.0f, false, 1, 1, false,
     false, 16, 8},
    {"Qwen2-MoE: top-3 + gated shared", 6, 3, ScoreFunc::kSoftmax, false, 1.0f, false, 1, 1, true,
     true, 24, 10},
    {"dots1: sigmoid+bias groups x2.5 + shared", 8, 2, ScoreFunc::kSigmoid, true, 2.5f, true, 4, 2,
     true, false, 16, 6},
    {"single expert", 1, 1, ScoreFunc::kSoftmax, true, 1.0f, false, 1, 1, false, false, 8, 5},
    {"k = E = 5", 5, 5, ScoreFunc::kSoftmax, true, 1.0f, false, 1, 1, false, false, 12, 7},
};

TEST(MoeLayer, MatchesScalarReference) {
  // T = 3 exercises the streaming kernels, T = 40 the sgemm path (expert batches > 16 rows).
  for (const Spec& s : kSpecs) {
    for (int64_t T : {1, 3, 40}) {
      Layer L = make_layer(s, 11);
      std::vector<RefOut> refs;
      const auto x = draw_tokens(L, T, uint32_t(100 + T), refs);
      std::vector<float> out(static_cast<size_t>(T * s.H), 12345.0f);
      MoeScratch scratch;
      moe_forward(L.block(), x.data(), T, s.H, out.data(), scratch);
      expect_close(out, refs, s.H, std::string(s.name) + " T=" + std::to_string(T));
    }
  }
}

// k = E with renormalised softmax is the dense mixture sum_e softmax_e(x) FFN_e(x), computed
// here without any top-k at all.
TEST(MoeLayer, AllExpertsEqualsDenseMixture) {
  for (int E : {2, 3, 8}) {
    const Spec s = {"dense", E,  E, ScoreFunc::kSoftmax, true, 1.0f, false, 1, 1, false,
                    false,   16, 9};
    Layer L = make_layer(s, 7 + uint32_t(E));
    constexpr int64_t T = 21;
    std::mt19937 rng(3);
    std::normal_distribution<float> d(0.0f, 1.0f);
    std::vector<float> x(static_cast<size_t>(T * s.H));
    for (auto& v : x) v = d(rng);
    std::vector<float> out(x.size());
    MoeScratch scratch;
    moe_forward(L.block(), x.data(), T, s.H, out.data(), scratch);

    std::vector<RefOut> dense(T);
    for (int64_t t = 0; t < T; ++t) {
      const float* xt = &x[size_t(t * s.H)];
      std::vector<double> logit(static_cast<size_t>(E));
      double max_dl = 0;
      for (int e = 0; e < E; ++e) {
        double mag = 0;
        for (int64_t h = 0; h < s.H; ++h)
          logit[size_t(e)] += L.router_w.at(e, h) * xt[h],
              mag += std::abs(L.router_w.at(e, h) * xt[h]);
        max_dl = std::max(max_dl, growth(s.H) * kEps * mag);
      }
      const double m = *std::max_element(logit.begin(), logit.end());
      double z = 0, range = 0;
      for (double l : logit) z += std::exp(l - m), range = std::max(range, m - l);
      dense[size_t(t)].y.assign(size_t(s.H), 0.0);
      dense[size_t(t)].tol.assign(size_t(s.H), 0.0);
      std::vector<double> y, mag;
      for (int e = 0; e < E; ++e) {
        const double pe = std::exp(logit[size_t(e)] - m) / z;
        ref_ffn(L.experts[size_t(e)], xt, y, mag);
        for (int64_t h = 0; h < s.H; ++h) {
          dense[size_t(t)].y[size_t(h)] += pe * y[size_t(h)];
          dense[size_t(t)].tol[size_t(h)] +=
              kSafety * pe *
              ((2 * growth(s.H) + growth(s.I) + 4) * kEps * mag[size_t(h)] +
               (2 * max_dl + (range + 8) * kEps) * std::abs(y[size_t(h)]));
        }
      }
    }
    expect_close(out, dense, s.H, "dense mixture E=" + std::to_string(E));
  }
}

TEST(MoeLayer, SharedExpertGate) {
  // With the shared gate vector zero, sigmoid(0) = 1/2: out = routed + shared(x) / 2, and the
  // ungated variant adds shared(x) in full. Checked against routed-only moe_forward.
  Spec s = kSpecs[2];
  Layer L = make_layer(s, 5);
  constexpr int64_t T = 9;
  std::vector<RefOut> refs;
  const auto x = draw_tokens(L, T, 77, refs);
  std::vector<float> routed(x.size()), half(x.size()), full(x.size());
  MoeScratch scratch;
  L.has_shared = false;
  moe_forward(L.block(), x.data(), T, s.H, routed.data(), scratch);
  L.has_shared = true;
  std::fill(L.shared_gate.begin(), L.shared_gate.end(), 0.0f);
  moe_forward(L.block(), x.data(), T, s.H, half.data(), scratch);
  L.shared_gated = false;
  moe_forward(L.block(), x.data(), T, s.H, full.data(), scratch);
  std::vector<double> y, mag;
  double worst = 0;
  std::string where;
  for (int64_t t = 0; t < T; ++t) {
    ref_ffn(L.shared, &x[size_t(t * s.H)], y, mag);
    for (int64_t h = 0; h < s.H; ++h) {
      const size_t i = size_t(t * s.H + h);
      const double tol =
          kSafety * ((2 * growth(s.H) + growth(2 * s.I) + 4) * kEps * mag[size_t(h)] +
                     2 * kEps * std::abs(routed[i]));
      for (auto [got, factor, name] :
           {std::tuple{half[i], 0.5, "gate 0"}, std::tuple{full[i], 1.0, "ungated"}}) {
        const double r = std::abs(got - routed[i] - factor * y[size_t(h)]) / tol;
        if (r > worst)
          worst = r, where = std::string(name) + " token " + std::to_string(t) + " column " +
                             std::to_string(h);
      }
    }
  }
  EXPECT_LE(worst, 1.0) << "worst at " << where;
}

TEST(MoeLayer, LoadStatsCountPairs) {
  const Spec& s = kSpecs[3];  // sigmoid + groups, k = 2 of 8
  Layer L = make_layer(s, 19);
  constexpr int64_t T = 33;
  std::vector<RefOut> refs;
  const auto x = draw_tokens(L, T, 4, refs);
  std::vector<float> out(x.size());
  MoeScratch scratch;
  LoadStats stats(3, s.E);
  MoeRuntime runtime;
  runtime.stats = &stats;
  moe_forward(L.block(), x.data(), T, s.H, out.data(), scratch, runtime, 1);
  moe_forward(L.block(), x.data(), 5, s.H, out.data(), scratch, runtime, 2);  // first 5 tokens
  std::vector<int64_t> expect1(size_t(s.E), 0), expect2(size_t(s.E), 0);
  for (int64_t t = 0; t < T; ++t)
    for (int id : refs[size_t(t)].ids) ++expect1[size_t(id)], expect2[size_t(id)] += t < 5;
  int64_t total = 0;
  for (int e = 0; e < s.E; ++e) {
    EXPECT_EQ(stats.count(0, e), 0) << "layer 0 was never run; expert " << e;
    EXPECT_EQ(stats.count(1, e), expect1[size_t(e)]) << "layer 1 expert " << e;
    EXPECT_EQ(stats.count(2, e), expect2[size_t(e)]) << "layer 2 expert " << e;
    total += stats.count(1, e);
  }
  EXPECT_EQ(total, T * s.K);
  EXPECT_FALSE(stats.layer_active(0));
  EXPECT_TRUE(stats.layer_active(1));
}

TEST(MoeLayer, ZeroTokens) {
  Layer L = make_layer(kSpecs[2], 1);
  MoeScratch scratch;
  LoadStats stats(1, kSpecs[2].E);
  std::vector<float> x, out;
  MoeRuntime runtime;
  runtime.stats = &stats;
  moe_forward(L.block(), x.data(), 0, kSpecs[2].H, out.data(), scratch, runtime, 0);
  EXPECT_FALSE(stats.layer_active(0));
}

TEST(MoeLayer, ScratchReuseAcrossBatchSizes) {
  // A scratch used for a large batch, then a small one, then again a large one, gives the
  // same results as fresh scratch each time (no stale rows or plans).
  const Spec& s = kSpecs[2];
  Layer L = make_layer(s, 23);
  std::vector<RefOut> refs;
  const auto x = draw_tokens(L, 40, 8, refs);
  MoeScratch shared_scratch;
  for (int64_t T : {40, 2, 17, 40, 1}) {
    std::vector<float> reused(static_cast<size_t>(T * s.H)), fresh(reused.size());
    moe_forward(L.block(), x.data(), T, s.H, reused.data(), shared_scratch);
    MoeScratch scratch;
    moe_forward(L.block(), x.data(), T, s.H, fresh.data(), scratch);
    EXPECT_EQ(reused, fresh) << "T = " << T;
  }
}

}  // namespace
}  // namespace sy::moe

namespace sy::moe {
namespace {

// Records the routing of every call (the trace writer's view).
struct Capture : RoutingObserver {
  std::vector<int32_t> ids;
  std::vector<float> weights;
  int slots = 0;
  void observe(const RoutingRecord& r) override {
    slots = r.slots;
    ids.assign(r.ids, r.ids + r.num_tokens * r.slots);
    weights.assign(r.weights, r.weights + r.num_tokens * r.slots);
  }
};

const CapacityPolicy kDroppingPolicies[] = {CapacityPolicy::kScore,        CapacityPolicy::kOrder,
                                            CapacityPolicy::kReverseOrder, CapacityPolicy::kRandom,
                                            CapacityPolicy::kReroute,      CapacityPolicy::kDevice};

TEST(MoeLayerCapacity, LargeGammaEqualsDroplessBitForBit) {
  for (const Spec& s : kSpecs) {
    constexpr int64_t T = 24;
    Layer L = make_layer(s, 5);
    std::vector<RefOut> refs;
    const auto x = draw_tokens(L, T, 77, refs);
    std::vector<float> dropless(static_cast<size_t>(T * s.H)), out(dropless.size());
    MoeScratch scratch;
    moe_forward(L.block(), x.data(), T, s.H, dropless.data(), scratch);
    for (CapacityPolicy policy : kDroppingPolicies) {
      for (int devices : {1, std::min(3, s.E)}) {
        MoeRuntime rt;
        rt.capacity.policy = policy;
        rt.capacity.factor = double(s.E);  // C = T*k >= any load
        if (devices > 1) rt.placement = Placement::contiguous(s.E, devices);
        LoadStats stats(1, s.E);
        rt.stats = &stats;
        moe_forward(L.block(), x.data(), T, s.H, out.data(), scratch, rt);
        EXPECT_EQ(0, std::memcmp(out.data(), dropless.data(), out.size() * sizeof(float)))
            << s.name << " policy " << capacity_policy_name(policy) << " devices " << devices;
        EXPECT_EQ(stats.totals().dropped, 0);
        EXPECT_EQ(stats.totals().added, 0);
      }
    }
  }
}

// With a binding capacity, the layer's output is exactly the weighted sum over the pairs the
// policy kept (as the observer reports them), computed here by the scalar reference FFN: a
// dropped pair contributes nothing and an added pair contributes with its reported weight.
TEST(MoeLayerCapacity, OutputSumsExactlyTheKeptPairs) {
  for (const Spec& s : kSpecs) {
    if (s.shared) continue;  // the shared path is covered by the dropless tests
    constexpr int64_t T = 30;
    Layer L = make_layer(s, 9);
    std::vector<RefOut> refs;
    const auto x = draw_tokens(L, T, 31, refs);
    for (CapacityPolicy policy : {CapacityPolicy::kScore, CapacityPolicy::kExpanded,
                                  CapacityPolicy::kReroute, CapacityPolicy::kDevice}) {
      MoeRuntime rt;
      rt.capacity.policy = policy;
      rt.capacity.factor = 0.75;
      rt.placement = Placement::contiguous(s.E, std::min(2, s.E));
      Capture capture;
      rt.observer = &capture;
      std::vector<float> out(static_cast<size_t>(T * s.H));
      MoeScratch scratch;
      moe_forward(L.block(), x.data(), T, s.H, out.data(), scratch, rt);
      std::vector<RefOut> expect(static_cast<size_t>(T));
      std::vector<double> y, mag;
      for (int64_t t = 0; t < T; ++t) {
        expect[size_t(t)].y.assign(size_t(s.H), 0.0);
        expect[size_t(t)].tol.assign(size_t(s.H), 1e-30);
        for (int slot = 0; slot < capture.slots; ++slot) {
          const int32_t e = capture.ids[size_t(t * capture.slots + slot)];
          if (e == kDroppedExpert) continue;
          const double w = capture.weights[size_t(t * capture.slots + slot)];
          ref_ffn(L.experts[size_t(e)], &x[size_t(t * s.H)], y, mag);
          for (int64_t h = 0; h < s.H; ++h) {
            expect[size_t(t)].y[size_t(h)] += w * y[size_t(h)];
            expect[size_t(t)].tol[size_t(h)] +=
                std::abs(w) * ((2 * growth(s.H) + growth(s.I) + 4) * kEps * mag[size_t(h)] +
                               4 * kEps * std::abs(y[size_t(h)]));
          }
        }
      }
      expect_close(out, expect, s.H,
                   std::string(s.name) + " policy " + std::string(capacity_policy_name(policy)));
    }
  }
}

// Capacity is counted per source device over that device's own token slice.
TEST(MoeLayerCapacity, CapacityIsPerSourceDeviceSlice) {
  const Spec& s = kSpecs[0];  // 4 experts, top-2
  constexpr int64_t T = 37;
  Layer L = make_layer(s, 3);
  std::vector<RefOut> refs;
  const auto x = draw_tokens(L, T, 8, refs);
  MoeRuntime rt;
  rt.capacity.policy = CapacityPolicy::kScore;
  rt.capacity.factor = 1.0;
  rt.placement = Placement::contiguous(s.E, 3);
  Capture capture;
  rt.observer = &capture;
  std::vector<float> out(static_cast<size_t>(T * s.H));
  MoeScratch scratch;
  moe_forward(L.block(), x.data(), T, s.H, out.data(), scratch, rt);
  for (int d = 0; d < 3; ++d) {
    const int64_t begin = rt.placement.token_begin(d, T), end = rt.placement.token_begin(d + 1, T);
    const int64_t C = int64_t(std::ceil(1.0 * double(end - begin) * s.K / s.E));
    std::vector<int64_t> load(size_t(s.E), 0);
    for (int64_t t = begin; t < end; ++t)
      for (int slot = 0; slot < capture.slots; ++slot)
        if (const int32_t e = capture.ids[size_t(t * capture.slots + slot)]; e >= 0)
          ++load[size_t(e)];
    for (int e = 0; e < s.E; ++e)
      EXPECT_LE(load[size_t(e)], C)
          << "device " << d << " tokens [" << begin << "," << end << ") expert " << e;
  }
}

}  // namespace
}  // namespace sy::moe
