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
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "moe/router.h"
#include "router_test_util.h"

namespace sy::moe {
namespace {

using namespace router_test_util;

struct RefRoute {
  std::vector<double> p;        // [E]
  std::vector<int> ids;         // [k]
  std::vector<double> weights;  // [k]
  double min_gap = 1e300;       // smallest relative score gap that decided the result
};

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

TEST(Router, PartialPartitionRoutesWholeExpertsToAllTheirParts) {
  // Three experts of two parts each; logits by hand: softmax p = (0.665, 0.245, 0.090).
  RouterConfig c = cfg(6, 2, ScoreFunc::kSoftmax, false);
  c.sub_experts = 2;
  c.expand_parts = true;
  ASSERT_EQ(c.num_logits(), 3);
  const float logits[3] = {1.0f, 0.0f, -1.0f};
  int32_t ids[2];
  float w[2], scores[6];
  route(c, logits, 1, nullptr, ids, w, scores);
  const double z = std::exp(1.0) + 1.0 + std::exp(-1.0);
  EXPECT_EQ(ids[0], 0);  // expert 0 -> parts 0 and 1, each with expert 0's weight
  EXPECT_EQ(ids[1], 1);
  EXPECT_NEAR(w[0], std::exp(1.0) / z, 1e-6);
  EXPECT_EQ(w[0], w[1]);
  for (int e = 0; e < 3; ++e)
    for (int q = 0; q < 2; ++q)
      EXPECT_NEAR(scores[2 * e + q], std::exp(1.0 - e) / z, 1e-6) << "part " << 2 * e + q;
}

TEST(Router, ConfigJsonRoundTripsAndRejectsABadGrouping) {
  RouterConfig c = cfg(8, 4, ScoreFunc::kSigmoid, true);
  c.sub_experts = 2;
  c.expand_parts = true;
  const RouterConfig back = parse_router_config_json(router_config_json(c), "t");
  EXPECT_EQ(back.sub_experts, 2);
  EXPECT_TRUE(back.expand_parts);
  EXPECT_EQ(back.describe(), c.describe());
  sy::testing::expect_error(
      [] { parse_router_config_json(R"({"num_experts": 8, "top_k": 3, "sub_experts": 2})", "t"); },
      {"sub_experts 2", "divide", "top_k 3"});
  sy::testing::expect_error(
      [] { parse_router_config_json(R"({"num_experts": 8, "top_k": 2, "sub_experts": 0})", "t"); },
      {"sub_experts 0"});
}

}  // namespace
}  // namespace sy::moe
