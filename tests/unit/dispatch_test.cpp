// plan_dispatch / gather_rows / combine_rows / scatter_add_rows (src/moe/dispatch.h). Rows are
// self-describing: x[t, h] = 1000 t + h, so a permuted row names the token it came from and a
// misrouted row shows up as "expert e row r holds token X". All values are small integers, exact in
// float32, so dispatch then combine with unit weights must give exactly (pairs kept for t) x input.
// The weighted combine is compared with a float32 reference that accumulates in ascending
// expert order, the order the header promises (Hugging Face index_add_), so it must be exact.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <memory>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "moe/dispatch.h"

namespace sy::moe {
namespace {

float cell(int64_t t, int64_t h) {
  return float(1000 * t + h);
}

std::vector<float> self_describing(int64_t T, int64_t H) {
  std::vector<float> x(static_cast<size_t>(T * H));
  for (int64_t t = 0; t < T; ++t)
    for (int64_t h = 0; h < H; ++h) x[size_t(t * H + h)] = cell(t, h);
  return x;
}

struct Case {
  const char* name;
  int64_t T;
  int k, E;
  std::function<int32_t(int64_t t, int slot, std::mt19937&)> pick;  // expert of a pair
};

// Distinct experts per token (as a router produces), optionally with some pairs dropped.
std::function<int32_t(int64_t, int, std::mt19937&)> random_distinct(int E, double drop) {
  auto perms = std::make_shared<std::vector<int32_t>>();
  return [E, drop, perms](int64_t, int slot, std::mt19937& rng) {
    if (slot == 0) {
      perms->resize(size_t(E));
      std::iota(perms->begin(), perms->end(), 0);
      std::shuffle(perms->begin(), perms->end(), rng);
    }
    if (std::uniform_real_distribution<double>(0, 1)(rng) < drop) return kDroppedExpert;
    return (*perms)[size_t(slot)];
  };
}

std::vector<Case> cases() {
  return {
      {"random k=2 of 8", 37, 2, 8, random_distinct(8, 0.0)},
      {"random k=3 of 5 with drops", 50, 3, 5, random_distinct(5, 0.3)},
      {"k = E", 9, 4, 4, random_distinct(4, 0.0)},
      {"k = 1 of 1", 5, 1, 1, random_distinct(1, 0.0)},
      {"all tokens to one expert", 23, 1, 6,
       [](int64_t, int, std::mt19937&) { return int32_t(4); }},
      {"empty experts (only 0 and 3 used)", 17, 2, 8,
       [](int64_t t, int slot, std::mt19937&) {
         return int32_t(slot == 0 ? (t % 2 ? 0 : 3) : (t % 2 ? 3 : 0));
       }},
      {"every pair dropped", 6, 2, 4, [](int64_t, int, std::mt19937&) { return kDroppedExpert; }},
      {"no tokens", 0, 2, 4, random_distinct(4, 0.0)},
      {"first and last expert only, reverse slot order", 11, 2, 7,
       [](int64_t, int slot, std::mt19937&) { return int32_t(slot == 0 ? 6 : 0); }},
      // Enough tokens x slots x columns for combine / scatter to take their parallel path.
      {"large, parallel path", 3000, 2, 8, random_distinct(8, 0.1)},
  };
}

struct Pairs {
  std::vector<int32_t> ids;
  std::vector<float> weights;
};

Pairs make_pairs(const Case& c, uint32_t seed, bool unit_weights) {
  std::mt19937 rng(seed);
  Pairs p;
  for (int64_t t = 0; t < c.T; ++t)
    for (int s = 0; s < c.k; ++s) {
      p.ids.push_back(c.pick(t, s, rng));
      // Weights are multiples of 1/8 so products and sums of small integers stay exact.
      p.weights.push_back(unit_weights ? 1.0f : float(1 + (t * 7 + s * 3) % 8) / 8.0f);
    }
  return p;
}

TEST(Dispatch, PlanMatchesReference) {
  for (const Case& c : cases()) {
    const Pairs p = make_pairs(c, 17, false);
    DispatchPlan plan;
    plan_dispatch(p.ids.data(), p.weights.data(), c.T, c.k, c.E, plan);
    ASSERT_EQ(plan.num_experts, c.E) << c.name;
    ASSERT_EQ(plan.offsets.size(), size_t(c.E) + 1) << c.name;
    EXPECT_EQ(plan.offsets[0], 0) << c.name;
    int64_t kept = 0;
    for (int32_t e : p.ids) kept += e != kDroppedExpert;
    EXPECT_EQ(plan.num_rows(), kept) << c.name;
    ASSERT_EQ(plan.token.size(), size_t(kept)) << c.name;
    ASSERT_EQ(plan.weight.size(), size_t(kept)) << c.name;
    for (int e = 0; e < c.E; ++e) {
      // Reference: the pairs of expert e in (token, slot) order.
      std::vector<int32_t> tokens;
      std::vector<float> weights;
      for (int64_t i = 0; i < c.T * c.k; ++i)
        if (p.ids[size_t(i)] == e)
          tokens.push_back(int32_t(i / c.k)), weights.push_back(p.weights[size_t(i)]);
      ASSERT_EQ(plan.rows_of(e), int64_t(tokens.size())) << c.name << ": expert " << e;
      const auto begin = size_t(plan.offsets[size_t(e)]);
      const std::vector<int32_t> got_tokens(plan.token.begin() + long(begin),
                                            plan.token.begin() + long(begin + tokens.size()));
      const std::vector<float> got_weights(plan.weight.begin() + long(begin),
                                           plan.weight.begin() + long(begin + tokens.size()));
      EXPECT_EQ(got_tokens, tokens)
          << c.name << ": tokens of expert " << e << " (must keep token order)";
      EXPECT_EQ(got_weights, weights) << c.name << ": weights of expert " << e;
    }
  }
}

TEST(Dispatch, GatheredRowsNameTheirToken) {
  constexpr int64_t H = 5;
  for (const Case& c : cases()) {
    const Pairs p = make_pairs(c, 23, true);
    DispatchPlan plan;
    plan_dispatch(p.ids.data(), p.weights.data(), c.T, c.k, c.E, plan);
    const auto x = self_describing(c.T, H);
    std::vector<float> permuted(static_cast<size_t>(plan.num_rows() * H) + 1, -1.0f);
    gather_rows(plan, x.data(), H, permuted.data());
    EXPECT_EQ(permuted.back(), -1.0f) << c.name << ": gather wrote past the last row";
    for (int e = 0; e < c.E; ++e) {
      std::vector<int64_t> expected;
      for (int64_t i = 0; i < c.T * c.k; ++i)
        if (p.ids[size_t(i)] == e) expected.push_back(i / c.k);
      for (int64_t r = 0; r < plan.rows_of(e); ++r) {
        const int64_t row = plan.offsets[size_t(e)] + r;
        const int64_t holds = int64_t(permuted[size_t(row * H)]) / 1000;
        ASSERT_EQ(holds, expected[size_t(r)])
            << c.name << ": expert " << e << " row " << r << " holds token " << holds;
        for (int64_t h = 0; h < H; ++h)
          ASSERT_EQ(permuted[size_t(row * H + h)], cell(holds, h))
              << c.name << ": expert " << e << " row " << r << " column " << h;
      }
    }
  }
}

TEST(Dispatch, DispatchThenCombineIsKTimesInput) {
  constexpr int64_t H = 3;
  for (const Case& c : cases()) {
    const Pairs p = make_pairs(c, 29, true);
    DispatchPlan plan;
    plan_dispatch(p.ids.data(), p.weights.data(), c.T, c.k, c.E, plan);
    const auto x = self_describing(c.T, H);
    std::vector<float> permuted(static_cast<size_t>(plan.num_rows() * H));
    gather_rows(plan, x.data(), H, permuted.data());
    std::vector<float> out(static_cast<size_t>(c.T * H), 0.0f);
    combine_rows(plan, permuted.data(), H, out.data());  // identity experts
    for (int64_t t = 0; t < c.T; ++t) {
      int kept = 0;
      for (int s = 0; s < c.k; ++s) kept += p.ids[size_t(t * c.k + s)] != kDroppedExpert;
      for (int64_t h = 0; h < H; ++h)
        ASSERT_EQ(out[size_t(t * H + h)], float(kept) * cell(t, h))
            << c.name << ": token " << t << " column " << h << " (" << kept << " pairs kept)";
    }
  }
}

// Weighted combine of per-expert outputs y_e(x) = (e + 1) x, accumulated onto a non-zero out.
TEST(Dispatch, WeightedCombineInExpertOrder) {
  constexpr int64_t H = 4;
  for (const Case& c : cases()) {
    const Pairs p = make_pairs(c, 31, false);
    DispatchPlan plan;
    plan_dispatch(p.ids.data(), p.weights.data(), c.T, c.k, c.E, plan);
    const auto x = self_describing(c.T, H);
    std::vector<float> expert_out(static_cast<size_t>(plan.num_rows() * H));
    gather_rows(plan, x.data(), H, expert_out.data());
    for (int e = 0; e < c.E; ++e)
      for (int64_t row = plan.offsets[size_t(e)]; row < plan.offsets[size_t(e) + 1]; ++row)
        for (int64_t h = 0; h < H; ++h) expert_out[size_t(row * H + h)] *= float(e + 1);

    std::vector<float> out(static_cast<size_t>(c.T * H), 0.5f), ref(out);
    combine_rows(plan, expert_out.data(), H, out.data());
    for (int e = 0; e < c.E; ++e)  // ascending expert order, float32, as documented
      for (int64_t i = 0; i < c.T * c.k; ++i) {
        if (p.ids[size_t(i)] != e) continue;
        const int64_t t = i / c.k;
        for (int64_t h = 0; h < H; ++h)
          ref[size_t(t * H + h)] += p.weights[size_t(i)] * (float(e + 1) * cell(t, h));
      }
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_EQ(out[i], ref[i]) << c.name << ": token " << i / H << " column " << i % H;
  }
}

// Every row names its pair (token, slot), and row_of inverts that map; dropped pairs have none.
TEST(Dispatch, RowsAndPairsAreInverse) {
  for (const Case& c : cases()) {
    const Pairs p = make_pairs(c, 5, false);
    DispatchPlan plan;
    plan_dispatch(p.ids.data(), p.weights.data(), c.T, c.k, c.E, plan);
    ASSERT_EQ(plan.num_tokens(), c.T) << c.name;
    for (int e = 0; e < c.E; ++e)
      for (int64_t r = plan.offsets[size_t(e)]; r < plan.offsets[size_t(e) + 1]; ++r) {
        const int64_t pair = int64_t(plan.token[size_t(r)]) * c.k + plan.slot[size_t(r)];
        ASSERT_EQ(p.ids[size_t(pair)], e) << c.name << ": row " << r;
        ASSERT_EQ(plan.row_of[size_t(pair)], r) << c.name << ": row " << r;
      }
    for (int64_t i = 0; i < c.T * c.k; ++i) {
      if (p.ids[size_t(i)] == kDroppedExpert) {
        ASSERT_EQ(plan.row_of[size_t(i)], -1) << c.name;
      }
    }
  }
}

// scatter_add_rows is gather_rows' adjoint: <gather(x), y> == <x, scatter(y)>, and it sums a
// token's rows in ascending expert order (compared exactly with a scalar loop in that order).
TEST(Dispatch, ScatterAddIsTheGathersAdjoint) {
  constexpr int64_t H = 6;
  for (const Case& c : cases()) {
    const Pairs p = make_pairs(c, 9, false);
    DispatchPlan plan;
    plan_dispatch(p.ids.data(), p.weights.data(), c.T, c.k, c.E, plan);
    std::mt19937 rng(11);
    std::uniform_real_distribution<float> u(-1, 1);
    std::vector<float> rows(static_cast<size_t>(plan.num_rows() * H));
    for (float& v : rows) v = u(rng);
    std::vector<float> out(static_cast<size_t>(c.T * H), 0.25f), ref(out);
    scatter_add_rows(plan, rows.data(), H, out.data());
    for (int e = 0; e < c.E; ++e)
      for (int64_t r = plan.offsets[size_t(e)]; r < plan.offsets[size_t(e) + 1]; ++r)
        for (int64_t h = 0; h < H; ++h)
          ref[size_t(plan.token[size_t(r)] * H + h)] += rows[size_t(r * H + h)];
    for (size_t i = 0; i < out.size(); ++i)
      ASSERT_EQ(out[i], ref[i]) << c.name << ": token " << i / H << " column " << i % H;

    const auto x = self_describing(c.T, H);
    std::vector<float> gathered(rows.size()), zero(static_cast<size_t>(c.T * H), 0.0f);
    gather_rows(plan, x.data(), H, gathered.data());
    scatter_add_rows(plan, rows.data(), H, zero.data());
    double lhs = 0, rhs = 0;
    for (size_t i = 0; i < rows.size(); ++i) lhs += double(gathered[i]) * rows[i];
    for (size_t i = 0; i < x.size(); ++i) rhs += double(x[i]) * zero[i];
    EXPECT_NEAR(lhs, rhs, 1e-6 * (std::abs(lhs) + 1) + 1e-3) << c.name;
  }
}

TEST(Dispatch, PlanIsReusable) {
  // A plan object reused for a smaller call must not keep rows of the previous one.
  DispatchPlan plan;
  const std::vector<int32_t> big_ids = {0, 1, 1, 2, 2, 0, 1, 2};
  const std::vector<float> big_w(8, 1.0f);
  plan_dispatch(big_ids.data(), big_w.data(), 4, 2, 3, plan);
  ASSERT_EQ(plan.num_rows(), 8);
  const std::vector<int32_t> small_ids = {kDroppedExpert, 1};
  const std::vector<float> small_w = {0.25f, 0.75f};
  plan_dispatch(small_ids.data(), small_w.data(), 1, 2, 2, plan);
  EXPECT_EQ(plan.num_rows(), 1);
  EXPECT_EQ(plan.offsets, (std::vector<int64_t>{0, 0, 1}));
  EXPECT_EQ(plan.token, std::vector<int32_t>{0});
  EXPECT_EQ(plan.weight, std::vector<float>{0.75f});
}

}  // namespace
}  // namespace sy::moe
