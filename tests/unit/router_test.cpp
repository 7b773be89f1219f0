// route() (src/moe/router.h) against a plain double-precision reference written here from
// the semantics in /work/shared/reference/formats.md sections 3-4 (HF routing):
//   p = softmax(logits) | sigmoid(logits); choice = p + selection_bias;
//   groups: group score = max | sum of top-2 of choice; keep topk_groups groups, others -> 0.0;
//   ids = top-k of choice (descending, ties to the lower id); w = p[ids] (unbiased);
//   renormalise: w /= (sum(w) + eps); then w *= routed_scaling_factor.
// Tolerance: the float32 router differs from the double reference by rounding only. For a
// softmax weight the chain (x - max, exp, sum, reciprocal, product) gives a relative error
// below eps * (|x - max| / 2 + 3); renormalisation and scaling add a few eps. We allow
// 4 * eps * (logit range + 8) relative. Random inputs whose selection is decided by a gap
// smaller than 1e-4 relative (where float rounding could legally reorder) are redrawn; exact ties
// are tested separately with hand-made logits.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "moe/dispatch.h"
#include "moe/router.h"
#include "util/error.h"

namespace sy::moe {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();
constexpr double kDecisiveGap = 1e-4;  // relative; float rounding is < 1e-5 relative here

struct RefRoute {
  std::vector<double> p;        // [E]
  std::vector<int> ids;         // [k]
  std::vector<double> weights;  // [k]
  double min_gap = 1e300;       // smallest relative score gap that decided the result
};

// Indices sorted by value descending, ties by lower index (a stable sort on the index order).
std::vector<int> order_desc(const std::vector<double>& v) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return v[size_t(a)] > v[size_t(b)]; });
  return idx;
}

double relative_gap(double a, double b) {
  const double scale = std::max(std::abs(a), std::abs(b));
  return scale == 0 ? 0 : (a - b) / scale;
}

RefRoute reference_route(const RouterConfig& c, const float* logits, const float* bias) {
  const int E = c.num_experts, K = c.top_k;
  RefRoute r;
  r.p.resize(size_t(E));
  if (c.score == ScoreFunc::kSoftmax) {
    double m = -1e300, sum = 0;
    for (int e = 0; e < E; ++e) m = std::max(m, double(logits[e]));
    for (int e = 0; e < E; ++e) sum += std::exp(double(logits[e]) - m);
    for (int e = 0; e < E; ++e) r.p[size_t(e)] = std::exp(double(logits[e]) - m) / sum;
  } else {
    for (int e = 0; e < E; ++e) r.p[size_t(e)] = 1.0 / (1.0 + std::exp(-double(logits[e])));
  }
  std::vector<double> choice(r.p);
  if (c.has_selection_bias)
    for (int e = 0; e < E; ++e) choice[size_t(e)] += bias[e];

  if (c.num_groups > 1) {
    const int per = E / c.num_groups;
    std::vector<double> group_score(size_t(c.num_groups));
    for (int g = 0; g < c.num_groups; ++g) {
      std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(members.begin(), members.end(), std::greater<>());
      group_score[size_t(g)] =
          c.group_score == GroupScore::kMax || per < 2 ? members[0] : members[0] + members[1];
    }
    const auto gorder = order_desc(group_score);
    for (int i = 0; i < c.topk_groups && i + 1 < c.num_groups; ++i)
      r.min_gap = std::min(r.min_gap, relative_gap(group_score[size_t(gorder[size_t(i)])],
                                                   group_score[size_t(gorder[size_t(i + 1)])]));
    std::vector<bool> keep(size_t(c.num_groups), false);
    for (int i = 0; i < c.topk_groups; ++i) keep[size_t(gorder[size_t(i)])] = true;
    for (int e = 0; e < E; ++e)
      if (!keep[size_t(e / per)]) choice[size_t(e)] = 0.0;
  }
  const auto order = order_desc(choice);
  for (int i = 0; i < K && i + 1 < E; ++i)
    r.min_gap = std::min(r.min_gap, relative_gap(choice[size_t(order[size_t(i)])],
                                                 choice[size_t(order[size_t(i + 1)])]));
  double sum = 0;
  for (int i = 0; i < K; ++i) {
    r.ids.push_back(order[size_t(i)]);
    r.weights.push_back(r.p[size_t(order[size_t(i)])]);
    sum += r.weights.back();
  }
  for (auto& w : r.weights) {
    if (c.renormalize) w /= sum + c.renormalize_epsilon;
    w *= c.routed_scaling_factor;
  }
  return r;
}

struct Variant {
  const char* name;
  ScoreFunc score;
  bool renormalize;
  float epsilon;
  float scale;
  bool bias;
  int groups;  // 0: none; otherwise the largest of {4, 3, 2} dividing E
  GroupScore group_score;
};

const Variant kVariants[] = {
    {"softmax -> top-k", ScoreFunc::kSoftmax, false, 0.0f, 1.0f, false, 0, GroupScore::kMax},
    {"softmax -> top-k -> renorm", ScoreFunc::kSoftmax, true, 0.0f, 1.0f, false, 0,
     GroupScore::kMax},
    {"softmax -> top-k -> renorm(eps 1e-3)", ScoreFunc::kSoftmax, true, 1e-3f, 1.0f, false, 0,
     GroupScore::kMax},
    {"softmax -> group max -> top-k -> x1.5 (DeepSeek-V2)", ScoreFunc::kSoftmax, false, 0.0f, 1.5f,
     false, 1, GroupScore::kMax},
    {"sigmoid -> top-k", ScoreFunc::kSigmoid, false, 0.0f, 1.0f, false, 0, GroupScore::kTop2Sum},
    {"sigmoid + bias -> top-k -> renorm -> x2.5", ScoreFunc::kSigmoid, true, 1e-20f, 2.5f, true, 0,
     GroupScore::kTop2Sum},
    {"sigmoid + bias -> group top-2 sum -> top-k -> renorm -> x2.5 (DeepSeek-V3)",
     ScoreFunc::kSigmoid, true, 1e-20f, 2.5f, true, 1, GroupScore::kTop2Sum},
    {"sigmoid + bias -> group max -> top-k", ScoreFunc::kSigmoid, false, 0.0f, 1.0f, true, 1,
     GroupScore::kMax},
};

std::string describe_case(const Variant& v, int E, int K, int groups, int topk_groups,
                          uint32_t seed) {
  return std::string(v.name) + " E=" + std::to_string(E) + " k=" + std::to_string(K) +
         " groups=" + std::to_string(groups) + "/" + std::to_string(topk_groups) +
         " seed=" + std::to_string(seed);
}

TEST(Router, MatchesReferenceOnRandomLogits) {
  constexpr int kTokens = 6;
  constexpr float kLogitRange = 3.0f;  // logits in [-3, 3]: sigmoid >= 0.047 > |bias| (0.04)
  int num_checked = 0, num_redrawn = 0;
  for (const Variant& v : kVariants) {
    for (int E : {1, 3, 6, 8, 60}) {
      std::vector<int> ks = {1, 2, 3, E};
      std::sort(ks.begin(), ks.end());
      ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
      for (int K : ks) {
        if (K > E) continue;
        RouterConfig c;
        c.num_experts = E;
        c.top_k = K;
        c.score = v.score;
        c.renormalize = v.renormalize;
        c.renormalize_epsilon = v.epsilon;
        c.routed_scaling_factor = v.scale;
        c.has_selection_bias = v.bias;
        c.group_score = v.group_score;
        if (v.groups) {
          int g = 1;
          for (int cand : {4, 3, 2})
            if (E % cand == 0 && E / cand >= 1) {
              g = cand;
              break;
            }
          if (g == 1) continue;  // E = 1: no grouping possible
          c.num_groups = g;
          c.topk_groups = g / 2;
          // k must fit in the kept groups (parse_config enforces the same); else keep all.
          if (K > c.topk_groups * (E / g)) c.topk_groups = g;
        }
        for (uint32_t seed = 1; seed <= 40; ++seed) {
          const std::string what = describe_case(v, E, K, c.num_groups, c.topk_groups, seed);
          std::mt19937 rng(seed * 7919u + uint32_t(E) * 31u + uint32_t(K));
          std::uniform_real_distribution<float> logit_dist(-kLogitRange, kLogitRange);
          std::uniform_real_distribution<float> bias_dist(-0.04f, 0.04f);
          std::vector<float> bias(static_cast<size_t>(E));
          for (auto& b : bias) b = bias_dist(rng);
          std::vector<float> logits(size_t(kTokens * E));
          std::vector<RefRoute> refs;
          for (int t = 0; t < kTokens; ++t) {
            for (int attempt = 0;; ++attempt) {
              for (int e = 0; e < E; ++e) logits[size_t(t * E + e)] = logit_dist(rng);
              RefRoute r = reference_route(c, &logits[size_t(t * E)], bias.data());
              if (r.min_gap >= kDecisiveGap) {
                refs.push_back(std::move(r));
                break;
              }
              ++num_redrawn;
              ASSERT_LT(attempt, 100) << what << ": cannot draw well-separated logits";
            }
          }
          std::vector<int32_t> ids(size_t(kTokens * K), -7);
          std::vector<float> weights(size_t(kTokens * K), -7.0f);
          std::vector<float> scores(size_t(kTokens * E), -7.0f);
          route(c, logits.data(), kTokens, v.bias ? bias.data() : nullptr, ids.data(),
                weights.data(), scores.data());

          const double rel_tol = 4 * kEps * (2 * kLogitRange + 8);
          for (int t = 0; t < kTokens; ++t) {
            const RefRoute& r = refs[size_t(t)];
            for (int i = 0; i < K; ++i) {
              const size_t at = size_t(t * K + i);
              ASSERT_EQ(ids[at], r.ids[size_t(i)]) << what << ": token " << t << " slot " << i
                                                   << " (decisive gap " << r.min_gap << ")";
            }
            double worst = 0;
            int worst_i = -1;
            for (int i = 0; i < K; ++i) {
              const size_t at = size_t(t * K + i);
              const double err =
                  std::abs(weights[at] - r.weights[size_t(i)]) / std::abs(r.weights[size_t(i)]);
              if (err > worst) worst = err, worst_i = i;
            }
            if (worst_i >= 0) {
              EXPECT_LE(worst, rel_tol)
                  << what << ": token " << t << " worst weight slot " << worst_i << " (expert "
                  << r.ids[size_t(worst_i)] << "): got " << weights[size_t(t * K + worst_i)]
                  << ", reference " << r.weights[size_t(worst_i)];
            }
            for (int e = 0; e < E; ++e) {
              const double got = scores[size_t(t * E + e)], ref = r.p[size_t(e)];
              ASSERT_LE(std::abs(got - ref), rel_tol * ref)
                  << what << ": token " << t << " score of expert " << e << ": got " << got
                  << ", reference " << ref;
            }
          }
          ++num_checked;
        }
      }
    }
  }
  EXPECT_GT(num_checked, 1000);
  // Redraws must be rare, or the test would be checking a biased sample.
  EXPECT_LT(num_redrawn, num_checked) << num_redrawn << " redraws for " << num_checked << " cases";
}

// Single-token routing, hand-checked: ties, groups, epsilon, extremes.
struct HandCase {
  const char* name;
  RouterConfig config;
  std::vector<float> logits;
  std::vector<float> bias;
  std::vector<int32_t> ids;
};

RouterConfig cfg(int E, int K, ScoreFunc s = ScoreFunc::kSoftmax, bool renorm = false) {
  RouterConfig c;
  c.num_experts = E;
  c.top_k = K;
  c.score = s;
  c.renormalize = renorm;
  return c;
}

RouterConfig grouped(RouterConfig c, int groups, int topk_groups, GroupScore gs, bool bias) {
  c.num_groups = groups;
  c.topk_groups = topk_groups;
  c.group_score = gs;
  c.has_selection_bias = bias;
  return c;
}

TEST(Router, TiesAndGroupsByHand) {
  const std::vector<HandCase> cases = {
      {"all equal -> lowest ids", cfg(8, 3), std::vector<float>(8, 0.5f), {}, {0, 1, 2}},
      {"ties among the best", cfg(5, 2), {1, 3, 3, 0, 3}, {}, {1, 2}},
      {"tie at the k boundary", cfg(5, 3), {5, 1, 2, 2, 2}, {}, {0, 2, 3}},
      {"sigmoid ties", cfg(4, 2, ScoreFunc::kSigmoid), {-1, 2, -1, 2}, {}, {1, 3}},
      {"k = E keeps descending order", cfg(4, 4), {0.1f, 0.4f, 0.3f, 0.2f}, {}, {1, 2, 3, 0}},
      // Group top-2 sum: groups {0,1} {2,3} {4,5}; group 1 has the single best expert (5) but
      // group 2's top-2 sum is larger: 4+4 > 5+0.
      {"group top-2 sum beats single best",
       grouped(cfg(6, 2, ScoreFunc::kSigmoid), 3, 1, GroupScore::kTop2Sum, false),
       {1, 1, 5, -5, 4, 4},
       {},
       {4, 5}},
      {"group max picks the single best",
       grouped(cfg(6, 2, ScoreFunc::kSigmoid), 3, 1, GroupScore::kMax, false),
       {1, 1, 5, -5, 4, 4},
       {},
       {2, 3}},  // group 1 kept; its weak expert 3 still beats masked 0.0
      {"equal groups -> lower group",
       grouped(cfg(4, 2, ScoreFunc::kSigmoid), 2, 1, GroupScore::kTop2Sum, false),
       {0, 0, 0, 0},
       {},
       {0, 1}},
      // The bias changes the selection but not the weights: expert 0 has the lowest score
      // but the largest biased choice.
      {"bias selects, does not weigh",
       grouped(cfg(4, 1, ScoreFunc::kSigmoid), 1, 1, GroupScore::kTop2Sum, true),
       {-1, 1, 0.5f, 0},
       {2.0f, 0, 0, 0},
       {0}},
      {"huge logits stay finite",
       cfg(3, 2, ScoreFunc::kSoftmax, true),
       {1000, 999, -1000},
       {},
       {0, 1}},
  };
  for (const auto& hc : cases) {
    const RouterConfig& c = hc.config;
    ASSERT_EQ(hc.logits.size(), size_t(c.num_experts)) << hc.name;
    std::vector<int32_t> ids(size_t(c.top_k));
    std::vector<float> w(size_t(c.top_k));
    route(c, hc.logits.data(), 1, hc.bias.empty() ? nullptr : hc.bias.data(), ids.data(), w.data());
    // The reference agrees on every hand case (checks the reference as much as route()).
    const RefRoute ref =
        reference_route(c, hc.logits.data(), hc.bias.empty() ? nullptr : hc.bias.data());
    const std::vector<int32_t> ref_ids(ref.ids.begin(), ref.ids.end());
    EXPECT_EQ(ref_ids, hc.ids) << hc.name << " (reference)";
    EXPECT_EQ(ids, hc.ids) << hc.name;
    for (int i = 0; i < c.top_k; ++i) {
      EXPECT_TRUE(std::isfinite(w[size_t(i)])) << hc.name;
      EXPECT_NEAR(w[size_t(i)], ref.weights[size_t(i)],
                  8 * kEps * std::abs(ref.weights[size_t(i)]) + 1e-30)
          << hc.name << " slot " << i;
    }
  }
}

// With k = E and renormalisation the weights are the softmax over all experts, and sum to 1.
TEST(Router, AllExpertsRenormalisedIsSoftmax) {
  for (int E : {1, 2, 5, 8, 60}) {
    for (uint32_t seed = 0; seed < 20; ++seed) {
      std::mt19937 rng(seed + 1000u * uint32_t(E));
      std::normal_distribution<float> dist(0.0f, 2.0f);
      std::vector<float> logits(static_cast<size_t>(E));
      for (auto& x : logits) x = dist(rng);
      RouterConfig c = cfg(E, E, ScoreFunc::kSoftmax, true);
      std::vector<int32_t> ids(static_cast<size_t>(E));
      std::vector<float> w(static_cast<size_t>(E));
      route(c, logits.data(), 1, nullptr, ids.data(), w.data());
      double m = *std::max_element(logits.begin(), logits.end()), z = 0, total = 0, range = 0;
      for (float x : logits) z += std::exp(x - m), range = std::max(range, m - x);
      std::vector<bool> seen(size_t(E), false);
      double worst = 0;
      int worst_e = -1;
      for (int i = 0; i < E; ++i) {
        const int e = ids[size_t(i)];
        ASSERT_TRUE(e >= 0 && e < E && !seen[size_t(e)])
            << "E=" << E << " seed " << seed << ": bad id " << e;
        seen[size_t(e)] = true;
        const double ref = std::exp(logits[size_t(e)] - m) / z;
        const double err = std::abs(w[size_t(i)] - ref) / ref;
        if (err > worst) worst = err, worst_e = e;
        total += w[size_t(i)];
      }
      EXPECT_LE(worst, 4 * kEps * (range + 8))
          << "E=" << E << " seed " << seed << ": worst expert " << worst_e;
      EXPECT_NEAR(total, 1.0, 4 * kEps * E) << "E=" << E << " seed " << seed;
    }
  }
}

TEST(Router, ManyTokensAreIndependent) {
  // Routing T tokens at once equals routing each alone (no state leaks between rows).
  RouterConfig c = grouped(cfg(8, 3, ScoreFunc::kSigmoid, true), 4, 2, GroupScore::kTop2Sum, true);
  c.routed_scaling_factor = 2.5f;
  c.renormalize_epsilon = 1e-20f;
  constexpr int T = 37;
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> dist(-4, 4);
  std::vector<float> logits(size_t(T * 8)), bias(8);
  for (auto& x : logits) x = dist(rng);
  for (auto& b : bias) b = dist(rng) * 0.01f;
  std::vector<int32_t> ids(size_t(T * 3));
  std::vector<float> w(size_t(T * 3));
  route(c, logits.data(), T, bias.data(), ids.data(), w.data());
  for (int t = 0; t < T; ++t) {
    int32_t one_ids[3];
    float one_w[3];
    route(c, &logits[size_t(t * 8)], 1, bias.data(), one_ids, one_w);
    for (int i = 0; i < 3; ++i) {
      EXPECT_EQ(ids[size_t(t * 3 + i)], one_ids[i]) << "token " << t << " slot " << i;
      EXPECT_EQ(w[size_t(t * 3 + i)], one_w[i]) << "token " << t << " slot " << i;
    }
  }
  std::vector<int32_t> none_ids = {-3};
  route(c, logits.data(), 0, bias.data(), none_ids.data(), w.data());
  EXPECT_EQ(none_ids[0], -3) << "T = 0 wrote output";
}

// ============================================================================================
// The survey's other gating functions (papers.md section 2): top-k before the score function
// (kSoftmaxTopK, kSigmoidTopK), noisy top-k gating (route_noisy) and expert choice
// (route_expert_choice). Each against a plain double-precision reference written here:
//   top-k-first: choice = logits + bias; groups: group score = max | top-2 sum of choice, the
//     experts of dropped groups -> -inf; ids = top-k of choice (descending, ties to the lower
//     id); w = softmax over the k selected (unbiased) logits | sigmoid(selected logits);
//     renormalise, scale as above; scores = softmax | sigmoid over all logits.
//   noisy: H = float(logits + noise_out), then the top-k-first reference on H.
//   expert choice: S = softmax(logits) per token; expert e takes the min(C, T) tokens of
//     largest S[., e] (stable: ties to the earlier token), C = ceil(cf * T / E).
// Tolerance 1e-6 absolute on values <= 1 (relative above 1): float32 rounding here is a few
// 1e-7 at most (logits within [-3, 3], see the bound at the top of this file). Selections
// decided by a gap below 1e-4 are redrawn; exact ties are tested with hand-made logits.
// ============================================================================================

constexpr double kTol = 1e-6;
constexpr double kInf = std::numeric_limits<double>::infinity();

double tol_for(double ref) {
  return kTol * std::max(1.0, std::abs(ref));
}

struct RefTopKFirst {
  std::vector<double> scores;   // [E]
  std::vector<int> ids;         // [k]
  std::vector<double> weights;  // [k]
  double min_gap = kInf;        // smallest absolute selection gap that decided the result
};

RefTopKFirst reference_topk_first(const RouterConfig& c, const float* logits, const float* bias) {
  const int E = c.num_experts, K = c.top_k;
  const bool softmax = c.score == ScoreFunc::kSoftmaxTopK;
  RefTopKFirst r;
  r.scores.resize(static_cast<size_t>(E));
  if (softmax) {
    double m = -kInf, sum = 0;
    for (int e = 0; e < E; ++e) m = std::max(m, double(logits[e]));
    for (int e = 0; e < E; ++e) sum += std::exp(double(logits[e]) - m);
    for (int e = 0; e < E; ++e) r.scores[size_t(e)] = std::exp(double(logits[e]) - m) / sum;
  } else {
    for (int e = 0; e < E; ++e) r.scores[size_t(e)] = 1.0 / (1.0 + std::exp(-double(logits[e])));
  }
  std::vector<double> choice(static_cast<size_t>(E));
  for (int e = 0; e < E; ++e)
    choice[size_t(e)] = double(logits[e]) + (c.has_selection_bias ? bias[e] : 0.0);
  if (c.num_groups > 1) {
    const int per = E / c.num_groups;
    std::vector<double> group_score(size_t(c.num_groups));
    for (int g = 0; g < c.num_groups; ++g) {
      std::vector<double> members(choice.begin() + g * per, choice.begin() + (g + 1) * per);
      std::sort(members.begin(), members.end(), std::greater<>());
      group_score[size_t(g)] =
          c.group_score == GroupScore::kMax || per < 2 ? members[0] : members[0] + members[1];
    }
    const auto gorder = order_desc(group_score);
    for (int i = 0; i < c.topk_groups && i + 1 < c.num_groups; ++i)
      r.min_gap = std::min(r.min_gap, group_score[size_t(gorder[size_t(i)])] -
                                          group_score[size_t(gorder[size_t(i + 1)])]);
    std::vector<bool> keep(size_t(c.num_groups), false);
    for (int i = 0; i < c.topk_groups; ++i) keep[size_t(gorder[size_t(i)])] = true;
    for (int e = 0; e < E; ++e)
      if (!keep[size_t(e / per)]) choice[size_t(e)] = -kInf;
  }
  const auto order = order_desc(choice);
  for (int i = 0; i < K && i + 1 < E; ++i)
    r.min_gap = std::min(r.min_gap,
                         choice[size_t(order[size_t(i)])] - choice[size_t(order[size_t(i + 1)])]);
  double m = -kInf;
  for (int i = 0; i < K; ++i) {
    r.ids.push_back(order[size_t(i)]);
    m = std::max(m, double(logits[order[size_t(i)]]));
  }
  double sum = 0;
  for (int i = 0; i < K; ++i) {
    const double x = logits[order[size_t(i)]];
    r.weights.push_back(softmax ? std::exp(x - m) : 1.0 / (1.0 + std::exp(-x)));
    sum += r.weights.back();
  }
  for (auto& w : r.weights) {
    if (softmax) w /= sum;
    if (c.renormalize) w /= (softmax ? 1.0 : sum) + c.renormalize_epsilon;
    w *= c.routed_scaling_factor;
  }
  return r;
}

// Compares route()'s output rows with the references; returns the number of tokens checked.
void expect_matches(const RouterConfig& c, const std::vector<RefTopKFirst>& refs,
                    const std::vector<int32_t>& ids, const std::vector<float>& weights,
                    const std::vector<float>& scores, const std::string& what) {
  const int E = c.num_experts, K = c.top_k;
  for (size_t t = 0; t < refs.size(); ++t) {
    const RefTopKFirst& r = refs[t];
    for (int i = 0; i < K; ++i)
      ASSERT_EQ(ids[t * size_t(K) + size_t(i)], r.ids[size_t(i)])
          << what << ": token " << t << " slot " << i << " (decisive gap " << r.min_gap << ")";
    double worst = 0;
    int worst_i = -1;
    for (int i = 0; i < K; ++i) {
      const double ref = r.weights[size_t(i)],
                   err = std::abs(weights[t * size_t(K) + size_t(i)] - ref) / tol_for(ref);
      if (err > worst) worst = err, worst_i = i;
    }
    EXPECT_LE(worst, 1.0) << what << ": token " << t << " worst weight slot " << worst_i
                          << " (expert " << r.ids[size_t(worst_i)] << "): got "
                          << weights[t * size_t(K) + size_t(worst_i)] << ", reference "
                          << r.weights[size_t(worst_i)];
    for (int e = 0; e < E; ++e) {
      const double got = scores[t * size_t(E) + size_t(e)], ref = r.scores[size_t(e)];
      ASSERT_LE(std::abs(got - ref), tol_for(ref)) << what << ": token " << t << " score of expert "
                                                   << e << ": got " << got << ", reference " << ref;
    }
  }
}

struct TopKFirstVariant {
  const char* name;
  bool renormalize;
  float epsilon;
  float scale;
  bool bias;
  int groups;  // 0: none; otherwise the largest of {4, 3, 2} dividing E
  GroupScore group_score;
};

const TopKFirstVariant kTopKFirstVariants[] = {
    {"top-k", false, 0.0f, 1.0f, false, 0, GroupScore::kMax},
    {"top-k -> renorm", true, 0.0f, 1.0f, false, 0, GroupScore::kMax},
    {"top-k -> renorm(eps 1e-3) -> x2.5", true, 1e-3f, 2.5f, false, 0, GroupScore::kMax},
    {"+ bias -> top-k", false, 0.0f, 1.0f, true, 0, GroupScore::kMax},
    {"+ bias -> group top-2 sum -> top-k -> renorm -> x2.5", true, 1e-20f, 2.5f, true, 1,
     GroupScore::kTop2Sum},
    {"group max -> top-k", false, 0.0f, 1.0f, false, 1, GroupScore::kMax},
};

// Sets groups as the score-first test does; false when E admits no grouping.
bool set_groups(RouterConfig& c, int groups_wanted) {
  if (!groups_wanted) return true;
  const int E = c.num_experts;
  int g = 1;
  for (int cand : {4, 3, 2})
    if (E % cand == 0) {
      g = cand;
      break;
    }
  if (g == 1) return false;
  c.num_groups = g;
  c.topk_groups = g / 2;
  if (c.top_k > c.topk_groups * (E / g)) c.topk_groups = g;
  return true;
}

std::vector<int> ks_for(int E) {
  std::vector<int> ks = {1, 2, 3, E};
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  ks.erase(std::remove_if(ks.begin(), ks.end(), [E](int k) { return k > E; }), ks.end());
  return ks;
}

constexpr double kDecisiveAbsGap = 1e-4;  // on logits in [-3, 3]: float rounding is < 1e-6

TEST(RouterTopKFirst, MatchesReferenceOnRandomLogits) {
  int num_checked = 0, num_redrawn = 0;
  for (ScoreFunc score : {ScoreFunc::kSoftmaxTopK, ScoreFunc::kSigmoidTopK}) {
    for (const TopKFirstVariant& v : kTopKFirstVariants) {
      for (int E : {1, 3, 8, 60}) {
        for (int K : ks_for(E)) {
          for (int T : {1, 5, 17}) {
            RouterConfig c;
            c.num_experts = E;
            c.top_k = K;
            c.score = score;
            c.renormalize = v.renormalize;
            c.renormalize_epsilon = v.epsilon;
            c.routed_scaling_factor = v.scale;
            c.has_selection_bias = v.bias;
            c.group_score = v.group_score;
            if (!set_groups(c, v.groups)) continue;
            for (uint32_t seed = 1; seed <= 8; ++seed) {
              const std::string what =
                  std::string(score_func_name(score)) + " " + v.name + " E=" + std::to_string(E) +
                  " k=" + std::to_string(K) + " T=" + std::to_string(T) +
                  " groups=" + std::to_string(c.num_groups) + "/" + std::to_string(c.topk_groups) +
                  " seed=" + std::to_string(seed);
              std::mt19937 rng(seed * 104729u + uint32_t(E) * 131u + uint32_t(K) * 7u +
                               uint32_t(T));
              std::uniform_real_distribution<float> logit_dist(-3.0f, 3.0f), bias_dist(-0.5f, 0.5f);
              std::vector<float> bias(static_cast<size_t>(E));
              for (auto& b : bias) b = bias_dist(rng);
              std::vector<float> logits(size_t(T * E));
              std::vector<RefTopKFirst> refs;
              for (int t = 0; t < T; ++t) {
                for (int attempt = 0;; ++attempt) {
                  for (int e = 0; e < E; ++e) logits[size_t(t * E + e)] = logit_dist(rng);
                  RefTopKFirst r = reference_topk_first(c, &logits[size_t(t * E)], bias.data());
                  if (r.min_gap >= kDecisiveAbsGap) {
                    refs.push_back(std::move(r));
                    break;
                  }
                  ++num_redrawn;
                  ASSERT_LT(attempt, 100) << what << ": cannot draw well-separated logits";
                }
              }
              std::vector<int32_t> ids(size_t(T * K), -7);
              std::vector<float> weights(size_t(T * K), -7.0f), scores(size_t(T * E), -7.0f);
              route(c, logits.data(), T, v.bias ? bias.data() : nullptr, ids.data(), weights.data(),
                    scores.data());
              expect_matches(c, refs, ids, weights, scores, what);
              if (HasFatalFailure()) return;
              // Without the scores output the ids and weights are the same, bit for bit.
              std::vector<int32_t> ids2(size_t(T * K));
              std::vector<float> weights2(size_t(T * K));
              route(c, logits.data(), T, v.bias ? bias.data() : nullptr, ids2.data(),
                    weights2.data(), nullptr);
              ASSERT_EQ(ids2, ids) << what << " (scores = nullptr)";
              ASSERT_EQ(weights2, weights) << what << " (scores = nullptr)";
              ++num_checked;
            }
          }
        }
      }
    }
  }
  EXPECT_GT(num_checked, 800);
  EXPECT_LT(num_redrawn, num_checked) << num_redrawn << " redraws for " << num_checked << " cases";
}

TEST(RouterTopKFirst, TiesAndSaturationByHand) {
  struct Case {
    const char* name;
    RouterConfig config;
    std::vector<float> logits;
    std::vector<float> bias;
    std::vector<int32_t> ids;
  };
  const std::vector<Case> cases = {
      {"softmax-topk: all equal -> lowest ids",
       cfg(8, 3, ScoreFunc::kSoftmaxTopK),
       std::vector<float>(8, 0.5f),
       {},
       {0, 1, 2}},
      {"softmax-topk: ties among the best",
       cfg(5, 2, ScoreFunc::kSoftmaxTopK),
       {1, 3, 3, 0, 3},
       {},
       {1, 2}},
      {"softmax-topk: tie at the k boundary",
       cfg(5, 3, ScoreFunc::kSoftmaxTopK),
       {5, 1, 2, 2, 2},
       {},
       {0, 2, 3}},
      {"sigmoid-topk: ties", cfg(4, 2, ScoreFunc::kSigmoidTopK), {-1, 2, -1, 2}, {}, {1, 3}},
      {"sigmoid-topk: k = E keeps descending order",
       cfg(4, 4, ScoreFunc::kSigmoidTopK),
       {0.1f, 0.4f, 0.3f, 0.2f},
       {},
       {1, 2, 3, 0}},
      // sigmoid(20), sigmoid(30), sigmoid(40) are all 1.0f: score-first sees a three-way tie,
      // top-k-first ranks the logits.
      {"sigmoid-topk ranks saturated logits",
       cfg(3, 2, ScoreFunc::kSigmoidTopK),
       {30, 20, 40},
       {},
       {2, 0}},
      {"sigmoid (score first) ties saturated scores",
       cfg(3, 2, ScoreFunc::kSigmoid),
       {30, 20, 40},
       {},
       {0, 1}},
      // softmax of -110 and -120 next to 0 underflow to 0.0f: same story.
      {"softmax-topk ranks underflowed logits",
       cfg(3, 2, ScoreFunc::kSoftmaxTopK),
       {0, -120, -110},
       {},
       {0, 2}},
      {"softmax (score first) ties underflowed scores",
       cfg(3, 2, ScoreFunc::kSoftmax),
       {0, -120, -110},
       {},
       {0, 1}},
      // Dropped groups get -inf, not 0: group {2,3} is dropped although its logits (-1) beat the
      // kept group's weaker member (-5), and k = 2 still comes from the kept group.
      {"softmax-topk groups mask with -inf",
       grouped(cfg(4, 2, ScoreFunc::kSoftmaxTopK), 2, 1, GroupScore::kMax, false),
       {3, -5, -1, -1},
       {},
       {0, 1}},
      {"sigmoid-topk group top-2 sum",
       grouped(cfg(6, 2, ScoreFunc::kSigmoidTopK), 3, 1, GroupScore::kTop2Sum, false),
       {1, 1, 5, -5, 4, 4},
       {},
       {4, 5}},
      {"softmax-topk equal groups -> lower group",
       grouped(cfg(4, 2, ScoreFunc::kSoftmaxTopK), 2, 1, GroupScore::kTop2Sum, false),
       {0, 0, 0, 0},
       {},
       {0, 1}},
      {"softmax-topk: bias selects, does not weigh",
       grouped(cfg(4, 1, ScoreFunc::kSoftmaxTopK), 1, 1, GroupScore::kMax, true),
       {-1, 1, 0.5f, 0},
       {2.5f, 0, 0, 0},
       {0}},
      {"softmax-topk: huge logits stay finite",
       cfg(3, 2, ScoreFunc::kSoftmaxTopK),
       {1000, 999, -1000},
       {},
       {0, 1}},
  };
  for (const auto& hc : cases) {
    const RouterConfig& c = hc.config;
    ASSERT_EQ(hc.logits.size(), size_t(c.num_experts)) << hc.name;
    const int K = c.top_k;
    std::vector<int32_t> ids(static_cast<size_t>(K));
    std::vector<float> w(static_cast<size_t>(K)), scores(size_t(c.num_experts));
    const float* bias = hc.bias.empty() ? nullptr : hc.bias.data();
    route(c, hc.logits.data(), 1, bias, ids.data(), w.data(), scores.data());
    EXPECT_EQ(ids, hc.ids) << hc.name;
    if (c.score == ScoreFunc::kSoftmaxTopK || c.score == ScoreFunc::kSigmoidTopK) {
      const RefTopKFirst ref = reference_topk_first(c, hc.logits.data(), bias);
      EXPECT_EQ(std::vector<int32_t>(ref.ids.begin(), ref.ids.end()), hc.ids)
          << hc.name << " (reference)";
      for (int i = 0; i < K; ++i) {
        EXPECT_TRUE(std::isfinite(w[size_t(i)])) << hc.name;
        EXPECT_NEAR(w[size_t(i)], ref.weights[size_t(i)], tol_for(ref.weights[size_t(i)]))
            << hc.name << " slot " << i;
      }
      for (int e = 0; e < c.num_experts; ++e)
        EXPECT_NEAR(scores[size_t(e)], ref.scores[size_t(e)], tol_for(ref.scores[size_t(e)]))
            << hc.name << " score " << e;
    }
  }
}

// Mixtral's softmax -> top-k -> renormalise equals softmax over the top-k logits.
TEST(RouterTopKFirst, SoftmaxTopKEqualsSoftmaxThenRenormalise) {
  for (int E : {2, 3, 8, 60}) {
    for (int K : ks_for(E)) {
      std::mt19937 rng(uint32_t(E * 100 + K));
      std::normal_distribution<float> dist(0.0f, 2.0f);
      constexpr int T = 23;
      std::vector<float> logits(size_t(T * E));
      for (auto& x : logits) x = dist(rng);
      RouterConfig a = cfg(E, K, ScoreFunc::kSoftmax, true), b = cfg(E, K, ScoreFunc::kSoftmaxTopK);
      std::vector<int32_t> ids_a(size_t(T * K)), ids_b(size_t(T * K));
      std::vector<float> w_a(size_t(T * K)), w_b(size_t(T * K)), s_a(size_t(T * E)),
          s_b(size_t(T * E));
      route(a, logits.data(), T, nullptr, ids_a.data(), w_a.data(), s_a.data());
      route(b, logits.data(), T, nullptr, ids_b.data(), w_b.data(), s_b.data());
      EXPECT_EQ(ids_a, ids_b) << "E=" << E << " k=" << K;
      EXPECT_EQ(s_a, s_b) << "E=" << E << " k=" << K << ": scores are the full softmax in both";
      for (size_t i = 0; i < w_a.size(); ++i)
        ASSERT_NEAR(w_a[i], w_b[i], kTol) << "E=" << E << " k=" << K << " pair " << i;
    }
  }
}

TEST(RouterTopKFirst, NamesAndDescribe) {
  for (ScoreFunc s :
       {ScoreFunc::kSoftmax, ScoreFunc::kSigmoid, ScoreFunc::kSoftmaxTopK, ScoreFunc::kSigmoidTopK})
    EXPECT_EQ(parse_score_func(score_func_name(s)), s) << score_func_name(s);
  EXPECT_EQ(parse_score_func("softmax-topk"), ScoreFunc::kSoftmaxTopK);
  EXPECT_EQ(parse_score_func("sigmoid-topk"), ScoreFunc::kSigmoidTopK);
  try {
    parse_score_func("softmax_topk");
    FAIL() << "no error for an unknown name";
  } catch (const sy::Error& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("'softmax_topk'"), std::string::npos) << msg;
    for (const char* name : {"softmax,", "sigmoid,", "softmax-topk,", "sigmoid-topk"})
      EXPECT_NE(msg.find(name), std::string::npos) << msg;
  }
  EXPECT_THROW(parse_score_func(""), sy::Error);
  // The score-first descriptions are unchanged.
  EXPECT_EQ(cfg(8, 2, ScoreFunc::kSoftmax, true).describe(),
            "softmax -> top-2 of 8 -> renormalise");
  EXPECT_EQ(cfg(8, 2, ScoreFunc::kSoftmaxTopK).describe(),
            "logits -> top-2 of 8 -> softmax over the selected");
  RouterConfig c =
      grouped(cfg(8, 2, ScoreFunc::kSigmoidTopK, true), 4, 2, GroupScore::kTop2Sum, true);
  c.routed_scaling_factor = 2.5f;
  EXPECT_EQ(c.describe(),
            "logits + selection bias -> top-2 of 4 groups (top-2 sum) -> top-2 of 8 -> sigmoid -> "
            "renormalise -> x2.5");
  EXPECT_EQ(
      describe_expert_choice(8, 2.0),
      "softmax -> expert choice: each of 8 experts takes its top-C tokens, C = ceil(2 * T / 8)");
}

// --- Noisy top-k gating -----------------------------------------------------------------------

double softplus_ref(double x) {
  return std::log1p(std::exp(-std::abs(x))) + std::max(x, 0.0);
}

TEST(RouterNoisy, MatchesReferenceOnTheSampledNoise) {
  int num_checked = 0, num_redrawn = 0;
  for (ScoreFunc score : {ScoreFunc::kSoftmaxTopK, ScoreFunc::kSigmoidTopK, ScoreFunc::kSoftmax}) {
    for (int E : {1, 3, 8, 60}) {
      for (int K : ks_for(E)) {
        for (int T : {1, 5, 17}) {
          RouterConfig c = cfg(E, K, score);
          for (uint64_t seed = 1; seed <= 6; ++seed) {
            const std::string what = std::string(score_func_name(score)) +
                                     " E=" + std::to_string(E) + " k=" + std::to_string(K) +
                                     " T=" + std::to_string(T) + " seed=" + std::to_string(seed);
            std::mt19937 rng(
                uint32_t(seed * 7 + uint64_t(E) * 1000 + uint64_t(K) * 100 + uint64_t(T)));
            std::uniform_real_distribution<float> logit_dist(-3.0f, 3.0f), noise_dist(-4.0f, 1.0f);
            std::vector<float> logits(size_t(T * E)), noise_logits(size_t(T * E));
            std::vector<int32_t> ids(size_t(T * K));
            std::vector<float> w(size_t(T * K)), scores(size_t(T * E)), noise(size_t(T * E));
            std::vector<RefTopKFirst> refs;
            for (int attempt = 0;; ++attempt) {
              for (auto& x : logits) x = logit_dist(rng);
              for (auto& x : noise_logits) x = noise_dist(rng);
              route_noisy(c, logits.data(), noise_logits.data(), T, seed, 77, ids.data(), w.data(),
                          scores.data(), noise.data());
              refs.clear();
              double gap = kInf;
              for (int t = 0; t < T; ++t) {
                std::vector<float> h(static_cast<size_t>(E));
                for (int e = 0; e < E; ++e)
                  h[size_t(e)] = logits[size_t(t * E + e)] + noise[size_t(t * E + e)];
                RouterConfig rc = c;
                rc.score = score == ScoreFunc::kSoftmax ? ScoreFunc::kSoftmaxTopK : score;
                RefTopKFirst r = reference_topk_first(rc, h.data(), nullptr);
                if (score == ScoreFunc::kSoftmax)  // softmax(H) -> top-k, no renormalisation
                  for (int i = 0; i < K; ++i)
                    r.weights[size_t(i)] = r.scores[size_t(r.ids[size_t(i)])];
                gap = std::min(gap, r.min_gap);
                refs.push_back(std::move(r));
              }
              if (gap >= kDecisiveAbsGap) break;
              ++num_redrawn;
              ASSERT_LT(attempt, 100) << what << ": cannot draw well-separated logits";
            }
            expect_matches(c, refs, ids, w, scores, what);
            if (HasFatalFailure()) return;
            // The noise is eps(seed, stream, t * E + e) * softplus(noise_logits).
            for (int i = 0; i < T * E; ++i) {
              const double ref = double(noisy_gating_normal(seed, 77, uint64_t(i))) *
                                 softplus_ref(noise_logits[size_t(i)]);
              ASSERT_NEAR(noise[size_t(i)], ref, 4 * kEps * std::abs(ref) + 1e-30)
                  << what << " element " << i;
            }
            ++num_checked;
          }
        }
      }
    }
  }
  EXPECT_GT(num_checked, 400);
  EXPECT_LT(num_redrawn, num_checked);
}

TEST(RouterNoisy, SeedStreamAndNoiseOut) {
  constexpr int T = 13, E = 8, K = 2;
  const RouterConfig c = cfg(E, K, ScoreFunc::kSoftmaxTopK);
  std::mt19937 rng(3);
  std::normal_distribution<float> dist(0.0f, 1.0f);
  std::vector<float> logits(size_t(T * E)), noise_logits(size_t(T * E));
  for (auto& x : logits) x = dist(rng);
  for (auto& x : noise_logits) x = dist(rng);
  struct Out {
    std::vector<int32_t> ids = std::vector<int32_t>(size_t(T * K));
    std::vector<float> w = std::vector<float>(size_t(T * K)),
                       scores = std::vector<float>(size_t(T * E)),
                       noise = std::vector<float>(size_t(T * E));
  };
  auto run = [&](uint64_t seed, uint64_t stream) {
    Out o;
    route_noisy(c, logits.data(), noise_logits.data(), T, seed, stream, o.ids.data(), o.w.data(),
                o.scores.data(), o.noise.data());
    return o;
  };
  const Out a = run(42, 3), b = run(42, 3), other_seed = run(43, 3), other_stream = run(42, 4);
  EXPECT_EQ(a.ids, b.ids);
  EXPECT_EQ(a.w, b.w);
  EXPECT_EQ(a.scores, b.scores);
  EXPECT_EQ(a.noise, b.noise);
  EXPECT_NE(a.noise, other_seed.noise);
  EXPECT_NE(a.noise, other_stream.noise);
  // Nullable outputs change nothing else.
  Out n;
  route_noisy(c, logits.data(), noise_logits.data(), T, 42, 3, n.ids.data(), n.w.data(), nullptr,
              nullptr);
  EXPECT_EQ(n.ids, a.ids);
  EXPECT_EQ(n.w, a.w);
  // noise_out reproduces H - logits: routing H = logits + noise_out is the same, bit for bit.
  std::vector<float> h(size_t(T * E));
  for (size_t i = 0; i < h.size(); ++i) h[i] = logits[i] + a.noise[i];
  Out r;
  route(c, h.data(), T, nullptr, r.ids.data(), r.w.data(), r.scores.data());
  EXPECT_EQ(r.ids, a.ids);
  EXPECT_EQ(r.w, a.w);
  EXPECT_EQ(r.scores, a.scores);
  // The noise actually changed some routing here (else the test above proves little).
  Out plain;
  route(c, logits.data(), T, nullptr, plain.ids.data(), plain.w.data(), plain.scores.data());
  EXPECT_NE(plain.ids, a.ids);
}

TEST(RouterNoisy, VanishingNoiseIsPlainSoftmaxTopK) {
  for (float off : {-1e30f, -std::numeric_limits<float>::infinity(), -200.0f}) {
    for (int E : {1, 3, 8, 60}) {
      for (int K : ks_for(E)) {
        constexpr int T = 9;
        const RouterConfig c = cfg(E, K, ScoreFunc::kSoftmaxTopK);
        std::mt19937 rng(uint32_t(E * 10 + K));
        std::normal_distribution<float> dist(0.0f, 2.0f);
        std::vector<float> logits(size_t(T * E)), noise_logits(size_t(T * E), off);
        for (auto& x : logits) x = dist(rng);
        std::vector<int32_t> ids(size_t(T * K)), ids_ref(size_t(T * K));
        std::vector<float> w(size_t(T * K)), w_ref(size_t(T * K)), s(size_t(T * E)),
            s_ref(size_t(T * E)), noise(size_t(T * E), 5.0f);
        route_noisy(c, logits.data(), noise_logits.data(), T, 9, 1, ids.data(), w.data(), s.data(),
                    noise.data());
        route(c, logits.data(), T, nullptr, ids_ref.data(), w_ref.data(), s_ref.data());
        EXPECT_EQ(ids, ids_ref) << "E=" << E << " k=" << K << " noise logit " << off;
        EXPECT_EQ(w, w_ref) << "E=" << E << " k=" << K << " noise logit " << off;
        EXPECT_EQ(s, s_ref) << "E=" << E << " k=" << K << " noise logit " << off;
        for (float x : noise) ASSERT_EQ(x, 0.0f) << "noise logit " << off;
      }
    }
  }
}

// eps is N(0, 1): moments and a few quantiles over many draws, and draws are uncorrelated
// across neighbouring elements and streams.
TEST(RouterNoisy, NoiseIsStandardNormal) {
  constexpr int N = 400000;
  double sum = 0, sum2 = 0, sum3 = 0, sum4 = 0, lag = 0, cross = 0;
  int below_m196 = 0, below_0 = 0, below_1 = 0;
  float prev = 0;
  for (int i = 0; i < N; ++i) {
    const double x = noisy_gating_normal(1234, 5, uint64_t(i));
    ASSERT_TRUE(std::isfinite(x));
    sum += x, sum2 += x * x, sum3 += x * x * x, sum4 += x * x * x * x;
    lag += x * prev;
    cross += x * noisy_gating_normal(1234, 6, uint64_t(i));
    prev = float(x);
    below_m196 += x < -1.959964;
    below_0 += x < 0;
    below_1 += x < 1;
  }
  const double n = N, se = 1 / std::sqrt(n);
  EXPECT_NEAR(sum / n, 0.0, 5 * se);
  EXPECT_NEAR(sum2 / n, 1.0, 5 * std::sqrt(2.0) * se);
  EXPECT_NEAR(sum3 / n, 0.0, 5 * std::sqrt(15.0) * se);
  EXPECT_NEAR(sum4 / n, 3.0, 5 * std::sqrt(96.0) * se);
  EXPECT_NEAR(lag / n, 0.0, 5 * se);
  EXPECT_NEAR(cross / n, 0.0, 5 * se);
  auto binom_se = [&](double p) { return std::sqrt(p * (1 - p) / n); };
  EXPECT_NEAR(below_m196 / n, 0.025, 5 * binom_se(0.025));
  EXPECT_NEAR(below_0 / n, 0.5, 5 * binom_se(0.5));
  EXPECT_NEAR(below_1 / n, 0.841345, 5 * binom_se(0.841345));
}

// --- Expert choice ---------------------------------------------------------------------------

int64_t ref_capacity(double cf, int64_t T, int E) {
  return int64_t(std::ceil(cf * double(T) / E - 1e-9));
}

TEST(RouterExpertChoice, Capacity) {
  EXPECT_EQ(expert_choice_capacity(1.0, 8, 4), 2);
  EXPECT_EQ(expert_choice_capacity(1.0, 9, 4), 3);
  EXPECT_EQ(expert_choice_capacity(2.0, 6, 3), 4);
  EXPECT_EQ(expert_choice_capacity(1.1, 10, 1), 11);  // 11.000000000000002 in double
  EXPECT_EQ(expert_choice_capacity(0.0, 10, 3), 0);
  EXPECT_EQ(expert_choice_capacity(0.01, 10, 3), 1);
  EXPECT_EQ(expert_choice_capacity(1.0, 0, 3), 0);
  EXPECT_EQ(expert_choice_capacity(8.0, 5, 2), 20);  // route_expert_choice clamps to T
}

TEST(RouterExpertChoice, MatchesReferenceOnRandomLogits) {
  int num_checked = 0, num_redrawn = 0;
  for (int E : {1, 3, 8, 60}) {
    for (int T : {1, 2, 5, 17, 64}) {
      for (double cf : {0.5, 1.0, 1.25, 2.0, 8.0}) {
        for (uint32_t seed = 1; seed <= 5; ++seed) {
          const std::string what = "E=" + std::to_string(E) + " T=" + std::to_string(T) +
                                   " cf=" + std::to_string(cf) + " seed=" + std::to_string(seed);
          const int64_t C = std::min<int64_t>(ref_capacity(cf, T, E), T);
          std::mt19937 rng(seed * 7u + uint32_t(E) * 1000u + uint32_t(T) * 10u + uint32_t(cf * 4));
          std::uniform_real_distribution<float> dist(-3.0f, 3.0f);
          std::vector<float> logits(size_t(T * E));
          std::vector<double> s(size_t(T * E));  // reference affinity
          std::vector<std::vector<int>> chosen(
              static_cast<size_t>(E));  // reference picks per expert
          for (int attempt = 0;; ++attempt) {
            for (auto& x : logits) x = dist(rng);
            for (int t = 0; t < T; ++t) {
              double m = -kInf, z = 0;
              for (int e = 0; e < E; ++e) m = std::max(m, double(logits[size_t(t * E + e)]));
              for (int e = 0; e < E; ++e) z += std::exp(double(logits[size_t(t * E + e)]) - m);
              for (int e = 0; e < E; ++e)
                s[size_t(t * E + e)] = std::exp(double(logits[size_t(t * E + e)]) - m) / z;
            }
            bool decisive = true;
            for (int e = 0; e < E; ++e) {
              std::vector<double> col(static_cast<size_t>(T));
              for (int t = 0; t < T; ++t) col[size_t(t)] = s[size_t(t * E + e)];
              const auto order = order_desc(col);
              chosen[size_t(e)].assign(order.begin(), order.begin() + C);
              // E = 1: every affinity is exactly 1 in both, an exact tie (earliest tokens win).
              if (E > 1 && C > 0 && C < T &&
                  relative_gap(col[size_t(order[size_t(C - 1)])], col[size_t(order[size_t(C)])]) <
                      kDecisiveGap)
                decisive = false;
            }
            if (decisive) break;
            ++num_redrawn;
            ASSERT_LT(attempt, 100) << what << ": cannot draw well-separated logits";
          }
          std::vector<int32_t> ids(size_t(T * E), -7);
          std::vector<float> w(size_t(T * E), -7.0f), scores(size_t(T * E), -7.0f);
          route_expert_choice(logits.data(), T, E, cf, ids.data(), w.data(), scores.data());
          std::vector<int32_t> ref_ids(size_t(T * E), kDroppedExpert);
          for (int e = 0; e < E; ++e)
            for (int t : chosen[size_t(e)]) ref_ids[size_t(t * E + e)] = e;
          for (int t = 0; t < T; ++t) {
            for (int e = 0; e < E; ++e) {
              const size_t i = size_t(t * E + e);
              ASSERT_EQ(ids[i], ref_ids[i]) << what << ": token " << t << " expert " << e;
              const double ref_w = ids[i] == kDroppedExpert ? 0.0 : s[i];
              ASSERT_NEAR(w[i], ref_w, kTol)
                  << what << ": weight of token " << t << " expert " << e;
              ASSERT_NEAR(scores[i], s[i], kTol)
                  << what << ": affinity of token " << t << " expert " << e;
            }
          }
          ++num_checked;
        }
      }
    }
  }
  EXPECT_EQ(num_checked, 4 * 5 * 5 * 5);
  EXPECT_LT(num_redrawn, num_checked);
}

// Invariants on inputs full of exact ties (tokens are copies of a few rows): every expert
// takes exactly min(C, T) tokens, those are its top-C by affinity, ties keep the earlier
// token, a token no expert chose has no expert, and weights are the affinities.
TEST(RouterExpertChoice, InvariantsWithTies) {
  for (int E : {1, 3, 8, 60}) {
    for (int T : {1, 4, 31, 100}) {
      for (double cf : {0.3, 1.0, 2.0, 100.0}) {
        const std::string what =
            "E=" + std::to_string(E) + " T=" + std::to_string(T) + " cf=" + std::to_string(cf);
        std::mt19937 rng(uint32_t(E * 31 + T));
        std::uniform_int_distribution<int> pick(0, 2), level(-2, 2);
        std::vector<float> rows(size_t(3 * E)), logits(size_t(T * E));
        for (auto& x : rows) x = float(level(rng));
        for (int t = 0; t < T; ++t) {
          const int r = pick(rng);
          std::copy_n(&rows[size_t(r * E)], E, &logits[size_t(t * E)]);
        }
        std::vector<int32_t> ids(size_t(T * E));
        std::vector<float> w(size_t(T * E)), s(size_t(T * E));
        route_expert_choice(logits.data(), T, E, cf, ids.data(), w.data(), s.data());
        const int64_t C = std::min<int64_t>(ref_capacity(cf, T, E), T);
        for (int e = 0; e < E; ++e) {
          int64_t count = 0;
          float min_chosen = std::numeric_limits<float>::infinity(), max_unchosen = -1;
          int last_chosen_at_min = -1, first_unchosen_at_max = T;
          for (int t = 0; t < T; ++t) {
            const size_t i = size_t(t * E + e);
            ASSERT_TRUE(ids[i] == e || ids[i] == kDroppedExpert)
                << what << ": slot holds " << ids[i];
            if (ids[i] == e) {
              ++count;
              ASSERT_EQ(w[i], s[i]) << what;
              if (s[i] <= min_chosen) min_chosen = s[i], last_chosen_at_min = t;
            } else {
              ASSERT_EQ(w[i], 0.0f) << what;
              if (s[i] > max_unchosen) max_unchosen = s[i], first_unchosen_at_max = t;
            }
          }
          ASSERT_EQ(count, C) << what << " expert " << e;
          if (count > 0 && count < T) {
            ASSERT_GE(min_chosen, max_unchosen) << what << " expert " << e << ": not its top-C";
            if (min_chosen == max_unchosen) {
              ASSERT_LT(last_chosen_at_min, first_unchosen_at_max)
                  << what << " expert " << e << ": tie kept a later token";
            }
          }
        }
      }
    }
  }
  // All tokens equal: every expert takes the first C tokens; the rest get no expert.
  constexpr int T = 5, E = 2;
  std::vector<float> logits(size_t(T * E), 0.25f);
  std::vector<int32_t> ids(size_t(T * E));
  std::vector<float> w(size_t(T * E));
  route_expert_choice(logits.data(), T, E, 1.0, ids.data(), w.data(), nullptr);  // C = 3
  const std::vector<int32_t> expect = {0, 1, 0, 1, 0, 1, -1, -1, -1, -1};
  EXPECT_EQ(ids, expect);
  for (int i = 0; i < T * E; ++i) EXPECT_EQ(w[size_t(i)], ids[size_t(i)] < 0 ? 0.0f : 0.5f) << i;
  // T = 0 writes nothing.
  int32_t none = -3;
  route_expert_choice(logits.data(), 0, E, 1.0, &none, w.data(), nullptr);
  EXPECT_EQ(none, -3);
}

}  // namespace
}  // namespace sy::moe
