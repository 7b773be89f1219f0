// Shared by the router tests -- router_test.cpp (route(), score first) and the survey's other
// gating functions (papers.md section 2) in router_topk_first_test.cpp, router_noisy_test.cpp
// and router_expert_choice_test.cpp: configs, the stable descending order, the tolerances, and
// the plain double-precision reference of top-k-first routing with its comparison:
//   top-k-first: choice = logits + bias; groups: group score = max | top-2 sum of choice, the
//     experts of dropped groups -> -inf; ids = top-k of choice (descending, ties to the lower
//     id); w = softmax over the k selected (unbiased) logits | sigmoid(selected logits);
//     renormalise, scale as in route()'s score-first reference; scores = softmax | sigmoid over
//     all logits.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "moe/router.h"

namespace sy::moe::router_test_util {

inline constexpr double kEps = std::numeric_limits<float>::epsilon();
inline constexpr double kDecisiveGap = 1e-4;  // relative; float rounding is < 1e-5 relative here

// Indices sorted by value descending, ties by lower index (a stable sort on the index order).
inline std::vector<int> order_desc(const std::vector<double>& v) {
  std::vector<int> idx(v.size());
  std::iota(idx.begin(), idx.end(), 0);
  std::stable_sort(idx.begin(), idx.end(),
                   [&](int a, int b) { return v[size_t(a)] > v[size_t(b)]; });
  return idx;
}

inline double relative_gap(double a, double b) {
  const double scale = std::max(std::abs(a), std::abs(b));
  return scale == 0 ? 0 : (a - b) / scale;
}

inline RouterConfig cfg(int E, int K, ScoreFunc s = ScoreFunc::kSoftmax, bool renorm = false) {
  RouterConfig c;
  c.num_experts = E;
  c.top_k = K;
  c.score = s;
  c.renormalize = renorm;
  return c;
}

inline RouterConfig grouped(RouterConfig c, int groups, int topk_groups, GroupScore gs, bool bias) {
  c.num_groups = groups;
  c.topk_groups = topk_groups;
  c.group_score = gs;
  c.has_selection_bias = bias;
  return c;
}

// Tolerance 1e-6 absolute on values <= 1 (relative above 1): float32 rounding here is a few
// 1e-7 at most (logits within [-3, 3], see the bound at the top of router_test.cpp). Selections
// decided by a gap below 1e-4 are redrawn; exact ties are tested with hand-made logits.
inline constexpr double kTol = 1e-6;
inline constexpr double kInf = std::numeric_limits<double>::infinity();

inline double tol_for(double ref) {
  return kTol * std::max(1.0, std::abs(ref));
}

inline constexpr double kDecisiveAbsGap = 1e-4;  // on logits in [-3, 3]: float rounding is < 1e-6

inline std::vector<int> ks_for(int E) {
  std::vector<int> ks = {1, 2, 3, E};
  std::sort(ks.begin(), ks.end());
  ks.erase(std::unique(ks.begin(), ks.end()), ks.end());
  ks.erase(std::remove_if(ks.begin(), ks.end(), [E](int k) { return k > E; }), ks.end());
  return ks;
}

struct RefTopKFirst {
  std::vector<double> scores;   // [E]
  std::vector<int> ids;         // [k]
  std::vector<double> weights;  // [k]
  double min_gap = kInf;        // smallest absolute selection gap that decided the result
};

inline RefTopKFirst reference_topk_first(const RouterConfig& c, const float* logits,
                                         const float* bias) {
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
inline void expect_matches(const RouterConfig& c, const std::vector<RefTopKFirst>& refs,
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

}  // namespace sy::moe::router_test_util
