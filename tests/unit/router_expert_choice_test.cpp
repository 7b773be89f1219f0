// Expert-choice routing (route_expert_choice, papers.md section 2) against a plain
// double-precision reference written here:
//   expert choice: S = softmax(logits) per token; expert e takes the min(C, T) tokens of
//     largest S[., e] (stable: ties to the earlier token), C = ceil(cf * T / E).
// Tolerance and redraws as in router_test_util.h.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "moe/dispatch.h"
#include "moe/router.h"
#include "router_test_util.h"

namespace sy::moe {
namespace {

using namespace router_test_util;

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
