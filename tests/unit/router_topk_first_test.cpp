// The survey's top-k before the score function (papers.md section 2: kSoftmaxTopK,
// kSigmoidTopK) through route(), against the plain double-precision top-k-first reference of
// router_test_util.h (random logits, ties and saturation by hand, Mixtral's equivalence), and
// the score-function names and descriptions.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>
#include <string>
#include <vector>

#include "moe/router.h"
#include "router_test_util.h"
#include "util/error.h"

namespace sy::moe {
namespace {

using namespace router_test_util;

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

}  // namespace
}  // namespace sy::moe
