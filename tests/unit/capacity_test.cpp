// Capacity policies (src/moe/capacity.h) and Placement (src/moe/placement.h): invariants that
// hold whatever the reference says (the exact tables are compared with an independent PyTorch
// reference in tests/reference/test_capacity_vs_torch.sh):
//  - token drop (score / order / reverse / random): every expert keeps min(load, C) pairs, all
//    of them the router's, in their slots, with their weights;
//  - expanded drop keeps exactly token drop's pairs in the router's slots (so an expert that
//    overflows keeps the same tokens), and only adds pairs on the source device's experts;
//  - with gamma so large that nothing overflows, every policy but expanded returns the router's
//    table bit for bit, the same as dropless (none);
//  - DT = overflow / routed is sum_i ReLU(N_i - C) / sum_i N_i, computed here;
//  - random drop is reproducible for the same (seed, stream) and changes with either;
//  - reroute and device-level capacity respect their bounds;
//  - C = ceil(gamma * T * k / E) computed in float64, at least 1;
//  - parse errors and Placement validation errors throw sy::Error naming the problem.
#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numeric>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "expect_error.h"
#include "moe/capacity.h"
#include "moe/dispatch.h"
#include "moe/moe_layer.h"
#include "moe/placement.h"
#include "moe/router.h"
#include "util/error.h"

namespace sy::moe {
namespace {

// A routed batch: router probabilities and the router's top-k table.
struct Batch {
  int64_t T = 0;
  int E = 0, k = 0;
  RouterConfig router;
  std::vector<float> scores;   // [T, E]
  std::vector<int32_t> ids;    // [T, k]
  std::vector<float> weights;  // [T, k]
};

// Random logits with a few hot experts (so some experts overflow and some stay empty).
Batch make_batch(int64_t T, int E, int k, uint32_t seed, ScoreFunc score = ScoreFunc::kSoftmax,
                 bool renormalize = false) {
  Batch b;
  b.T = T;
  b.E = E;
  b.k = k;
  b.router.num_experts = E;
  b.router.top_k = k;
  b.router.score = score;
  b.router.renormalize = renormalize;
  std::mt19937 rng(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> logits(size_t(T * E));
  for (int64_t t = 0; t < T; ++t)
    for (int e = 0; e < E; ++e)
      logits[size_t(t * E + e)] =
          normal(rng) + (e % 4 == 1 ? 2.0f : 0.0f) - (e % 5 == 4 ? 3.0f : 0.0f);
  b.scores.resize(size_t(T * E));
  b.ids.resize(size_t(T * k));
  b.weights.resize(size_t(T * k));
  route(b.router, logits.data(), T, nullptr, b.ids.data(), b.weights.data(), b.scores.data());
  return b;
}

struct Result {
  int slots = 0;
  std::vector<int32_t> ids;    // [T, slots]
  std::vector<float> weights;  // [T, slots]
  CapacityOutcome outcome;
};

Result run(const Batch& b, const CapacityConfig& cfg, const Placement& placement = Placement(),
           int source_device = 0, uint64_t stream = 0, bool decode_step = false) {
  Result r;
  r.slots = capacity_slots(cfg, b.k, b.E, placement);
  r.ids.assign(size_t(b.T * r.slots), 777);  // garbage: every slot must be written
  r.weights.assign(size_t(b.T * r.slots), -3.0f);
  r.outcome.reset(b.E);
  apply_capacity(cfg, b.router, b.scores.data(), b.ids.data(), b.weights.data(), b.T, placement,
                 source_device, CapacityCall{stream, decode_step}, r.ids.data(), r.weights.data(),
                 r.slots, r.outcome);
  return r;
}

CapacityConfig config(CapacityPolicy policy, double gamma) {
  CapacityConfig c;
  c.policy = policy;
  c.factor = gamma;
  return c;
}

// Loads counted from a table ([T, slots], -1 = no pair).
std::vector<int64_t> loads(const std::vector<int32_t>& ids, int E) {
  std::vector<int64_t> n(size_t(E), 0);
  for (int32_t e : ids)
    if (e != kDroppedExpert) ++n[size_t(e)];
  return n;
}

std::set<int64_t> tokens_of(const std::vector<int32_t>& ids, int slots, int expert) {
  std::set<int64_t> out;
  for (size_t i = 0; i < ids.size(); ++i)
    if (ids[i] == expert) out.insert(int64_t(i) / slots);
  return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

void expect_message(const std::function<void()>& f, const std::vector<std::string>& parts) {
  try {
    f();
    ADD_FAILURE() << "expected sy::Error";
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const std::string& p : parts)
      EXPECT_NE(msg.find(p), std::string::npos) << "message '" << msg << "' lacks '" << p << "'";
  }
}

const CapacityPolicy kTokenDrops[] = {CapacityPolicy::kScore, CapacityPolicy::kOrder,
                                      CapacityPolicy::kReverseOrder, CapacityPolicy::kRandom};
const CapacityPolicy kAllPolicies[] = {CapacityPolicy::kNone,    CapacityPolicy::kScore,
                                       CapacityPolicy::kOrder,   CapacityPolicy::kReverseOrder,
                                       CapacityPolicy::kRandom,  CapacityPolicy::kExpanded,
                                       CapacityPolicy::kReroute, CapacityPolicy::kDevice};

struct Shape {
  int64_t T;
  int E, k;
};
const Shape kShapes[] = {{2, 1, 1},  {7, 3, 1},    {64, 4, 2},   {100, 8, 3},
                         {33, 8, 8}, {300, 12, 2}, {250, 60, 4}, {5, 60, 60}};

// ---------------------------------------------------------------------------------------------
// C, slots, names
// ---------------------------------------------------------------------------------------------

TEST(ExpertCapacity, RoundsUpInFloat64) {
  EXPECT_EQ(expert_capacity(1.5, 8, 2, 4), 6);      // exactly 6.0: no spurious round-up
  EXPECT_EQ(expert_capacity(1.0, 7, 2, 4), 4);      // 3.5 -> 4
  EXPECT_EQ(expert_capacity(1.25, 16, 1, 4), 5);    // exactly 5
  EXPECT_EQ(expert_capacity(1.0, 100, 8, 8), 100);  // k = E: every token
  EXPECT_EQ(expert_capacity(2.0, 300, 4, 60), 40);
  EXPECT_EQ(expert_capacity(0.5, 1, 1, 60), 1);  // at least 1 for T > 0
  EXPECT_EQ(expert_capacity(1e-9, 3, 1, 8), 1);
  // Non-dyadic gammas follow the stated float64 formula, rounding error included
  // (0.1 * 48 * 5 / 8 = 3.0000000000000004 -> 4).
  for (double g : {0.1, 0.3, 0.7, 1.1, 1.3, 2.2})
    for (int64_t T : {1, 10, 14, 48, 50, 96, 300})
      for (auto [k, E] : {std::pair{1, 1}, {5, 8}, {5, 12}, {2, 6}, {3, 3}}) {
        const auto want = std::max<int64_t>(1, int64_t(std::ceil(g * double(T) * k / E)));
        EXPECT_EQ(expert_capacity(g, T, k, E), want) << g << " " << T << " " << k << " " << E;
      }
  EXPECT_EQ(expert_capacity(0.1, 48, 5, 8), 4);
}

TEST(CapacitySlots, ExpandedAddsTheLargestDevice) {
  const CapacityConfig expanded = config(CapacityPolicy::kExpanded, 1.5);
  EXPECT_EQ(capacity_slots(expanded, 2, 12, Placement()), 14);  // one device: all experts
  EXPECT_EQ(
      capacity_slots(expanded, 2, 12, Placement::from_map({0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2}, 3)),
      8);
  EXPECT_EQ(capacity_slots(expanded, 3, 10, Placement::contiguous(10, 4)), 6);
  for (CapacityPolicy p : kAllPolicies)
    if (p != CapacityPolicy::kExpanded) {
      EXPECT_EQ(capacity_slots(config(p, 1.5), 3, 10, Placement::contiguous(10, 4)), 3);
    }
}

TEST(CapacityPolicyName, RoundTripsAndRejectsUnknown) {
  const char* names[] = {"none",   "score",    "order",   "reverse",
                         "random", "expanded", "reroute", "device"};
  for (const char* n : names) EXPECT_EQ(capacity_policy_name(parse_capacity_policy(n)), n);
  for (CapacityPolicy p : kAllPolicies)
    EXPECT_EQ(parse_capacity_policy(capacity_policy_name(p)), p);
  std::vector<std::string> parts = {"drop-by-score"};
  for (const char* n : names) parts.push_back(n);
  expect_message([] { parse_capacity_policy("drop-by-score"); }, parts);
  EXPECT_THROW(parse_capacity_policy(""), Error);
  EXPECT_THROW(parse_capacity_policy("Score"), Error);
}

// ---------------------------------------------------------------------------------------------
// Token drop
// ---------------------------------------------------------------------------------------------

TEST(TokenDrop, EveryExpertKeepsMinOfLoadAndCapacity) {
  uint32_t seed = 1;
  for (const Shape& s : kShapes)
    for (double gamma : {0.5, 1.0, 1.5})
      for (CapacityPolicy p : kTokenDrops) {
        const Batch b = make_batch(s.T, s.E, s.k, seed++);
        CapacityConfig cfg = config(p, gamma);
        cfg.seed = seed;
        const Result r = run(b, cfg);
        SCOPED_TRACE(::testing::Message() << capacity_policy_name(p) << " T=" << s.T << " E=" << s.E
                                          << " k=" << s.k << " gamma=" << gamma);
        ASSERT_EQ(r.slots, s.k);
        const int64_t C = expert_capacity(gamma, s.T, s.k, s.E);
        const auto before = loads(b.ids, s.E), after = loads(r.ids, s.E);
        for (int e = 0; e < s.E; ++e) {
          EXPECT_LE(after[size_t(e)], C);
          EXPECT_EQ(after[size_t(e)], std::min(before[size_t(e)], C)) << "expert " << e;
        }
        for (size_t i = 0; i < r.ids.size(); ++i) {  // a subset of the router's pairs, in place
          if (r.ids[i] == kDroppedExpert) {
            EXPECT_EQ(r.weights[i], 0.0f);
          } else {
            EXPECT_EQ(r.ids[i], b.ids[i]);
            EXPECT_EQ(r.weights[i], b.weights[i]);
          }
        }
        EXPECT_EQ(r.outcome.load_before, before);
        EXPECT_EQ(r.outcome.load_after, after);
        EXPECT_EQ(r.outcome.added, 0);
        EXPECT_EQ(r.outcome.rerouted, 0);
        // an overflowing expert drops exactly its overflow
        EXPECT_EQ(r.outcome.dropped, r.outcome.overflow);
      }
}

TEST(TokenDrop, ScoreKeepsTheHighestScoresOrderTheEarliestReverseTheLatest) {
  // One expert, six tokens, C = ceil(0.5 * 6 * 1 / 1) = 3; scores 0.1 .. 0.6 in a shuffled order.
  Batch b;
  b.T = 6, b.E = 1, b.k = 1;
  b.router.num_experts = 1, b.router.top_k = 1;
  b.scores = {0.3f, 0.6f, 0.1f, 0.5f, 0.2f, 0.4f};
  b.ids.assign(6, 0);
  b.weights = b.scores;
  auto kept = [&](CapacityPolicy p) {
    const Result r = run(b, config(p, 0.5));
    std::vector<int> out;
    for (int t = 0; t < 6; ++t)
      if (r.ids[size_t(t)] == 0) out.push_back(t);
    return out;
  };
  EXPECT_EQ(kept(CapacityPolicy::kScore), (std::vector<int>{1, 3, 5}));
  EXPECT_EQ(kept(CapacityPolicy::kOrder), (std::vector<int>{0, 1, 2}));
  EXPECT_EQ(kept(CapacityPolicy::kReverseOrder), (std::vector<int>{3, 4, 5}));
  // ties keep the earlier token
  b.scores = {0.5f, 0.5f, 0.5f, 0.5f, 0.5f, 0.5f};
  EXPECT_EQ(kept(CapacityPolicy::kScore), (std::vector<int>{0, 1, 2}));
  b.scores = {0.2f, 0.5f, 0.2f, 0.5f, 0.2f, 0.2f};
  EXPECT_EQ(kept(CapacityPolicy::kScore), (std::vector<int>{0, 1, 3}));
}

TEST(TokenDrop, DroppedFractionIsTheFormula) {
  uint32_t seed = 100;
  for (const Shape& s : kShapes)
    for (double gamma : {0.5, 1.0, 1.25, 2.0}) {
      const Batch b = make_batch(s.T, s.E, s.k, seed++);
      const Result r = run(b, config(CapacityPolicy::kScore, gamma));
      const int64_t C = expert_capacity(gamma, s.T, s.k, s.E);
      int64_t over = 0, routed = 0;
      for (int64_t n : loads(b.ids, s.E)) {
        over += std::max<int64_t>(0, n - C);
        routed += n;
      }
      EXPECT_EQ(r.outcome.routed, routed);
      EXPECT_EQ(r.outcome.overflow, over);
      const double dt = double(r.outcome.overflow) / double(r.outcome.routed);
      EXPECT_EQ(dt, double(over) / double(routed))
          << "T=" << s.T << " E=" << s.E << " gamma=" << gamma;
      // the same overflow whatever the policy does with it
      for (CapacityPolicy p : kAllPolicies)
        EXPECT_EQ(run(b, config(p, gamma)).outcome.overflow, over);
    }
}

TEST(TokenDrop, RenormalizeMakesSurvivorsSumToOne) {
  // As the authors' renormalize_after_capacity_drop: weights / their sum. An OLMoE-style router
  // (no top-k renormalisation) makes the difference from restoring the router's own sum.
  for (CapacityPolicy p : {CapacityPolicy::kScore, CapacityPolicy::kExpanded,
                           CapacityPolicy::kReroute, CapacityPolicy::kDevice}) {
    const Batch b = make_batch(200, 8, 3, 7, ScoreFunc::kSoftmax, false);
    CapacityConfig cfg = config(p, 0.5);
    cfg.renormalize = true;
    const Result r = run(b, cfg);
    int64_t renormalised = 0;
    for (int64_t t = 0; t < b.T; ++t) {
      const double want = 1.0;
      double got = 0;
      bool any = false;
      for (int j = 0; j < r.slots; ++j) {
        got += r.weights[size_t(t * r.slots + j)];
        any |= r.ids[size_t(t * r.slots + j)] != kDroppedExpert;
      }
      if (any) {
        EXPECT_NEAR(got, want, 1e-5 * want) << capacity_policy_name(p) << " token " << t;
        ++renormalised;
      } else {
        EXPECT_EQ(got, 0.0);
      }
    }
    EXPECT_GT(renormalised, 0);
  }
}

// ---------------------------------------------------------------------------------------------
// Expanded drop
// ---------------------------------------------------------------------------------------------

// Algorithm 2 written out per expert: the candidates of expert e are every token when e is on
// the source device, else the tokens that routed to e; e keeps the C with the highest score
// (ties: earlier token).
std::set<int64_t> algorithm2_keeps(const Batch& b, int e, bool local, int64_t C) {
  std::vector<int64_t> cand;
  for (int64_t t = 0; t < b.T; ++t) {
    bool routed = false;
    for (int j = 0; j < b.k; ++j) routed |= b.ids[size_t(t * b.k + j)] == e;
    if (local || routed) cand.push_back(t);
  }
  std::stable_sort(cand.begin(), cand.end(), [&](int64_t x, int64_t y) {
    return b.scores[size_t(x * b.E + e)] > b.scores[size_t(y * b.E + e)];
  });
  if (int64_t(cand.size()) > C) cand.resize(size_t(C));
  return {cand.begin(), cand.end()};
}

TEST(ExpandedDrop, IsAlgorithm2) {
  uint32_t seed = 300;
  int64_t routed_pairs_outranked = 0;
  for (const Shape& s : kShapes)
    for (int D : {1, 2, 3})
      for (double gamma : {0.5, 1.0, 1.5}) {
        if (D > s.E) continue;
        const Placement placement = D == 1 ? Placement() : Placement::contiguous(s.E, D);
        const int source = D - 1;
        const Batch b = make_batch(s.T, s.E, s.k, seed++);
        const Result drop = run(b, config(CapacityPolicy::kScore, gamma));
        const Result exp = run(b, config(CapacityPolicy::kExpanded, gamma), placement, source);
        SCOPED_TRACE(::testing::Message() << "T=" << s.T << " E=" << s.E << " k=" << s.k
                                          << " D=" << D << " gamma=" << gamma);
        const int64_t C = expert_capacity(gamma, s.T, s.k, s.E);
        for (int e = 0; e < s.E; ++e) {
          const bool local = placement.empty() || placement.device_of(e) == source;
          const auto kept = tokens_of(exp.ids, exp.slots, e);
          EXPECT_EQ(kept, algorithm2_keeps(b, e, local, C)) << "expert " << e;
          if (!local) {
            EXPECT_EQ(kept, tokens_of(drop.ids, s.k, e)) << "expert " << e;
          }
        }
        for (int64_t t = 0; t < s.T; ++t) {
          // router slots: the router's pair and weight, or dropped
          double w_router = 0, p_router = 0;
          for (int j = 0; j < s.k; ++j) {
            const int32_t want = b.ids[size_t(t * s.k + j)];
            const int32_t got = exp.ids[size_t(t * exp.slots + j)];
            w_router += b.weights[size_t(t * s.k + j)];
            p_router += b.scores[size_t(t * s.E + want)];
            EXPECT_TRUE(got == want || got == kDroppedExpert) << t << "," << j;
            EXPECT_EQ(exp.weights[size_t(t * exp.slots + j)],
                      got == want ? b.weights[size_t(t * s.k + j)] : 0.0f);
            if (got == kDroppedExpert && tokens_of(drop.ids, s.k, want).count(t))
              ++routed_pairs_outranked;  // token drop keeps it, Algorithm 2 does not
          }
          // added pairs: after the router's slots, ascending expert ids, then -1 padding;
          // weight = score x the token's router normalisation
          int32_t last = -1;
          bool pad = false;
          for (int j = s.k; j < exp.slots; ++j) {
            const int32_t e = exp.ids[size_t(t * exp.slots + j)];
            const float w = exp.weights[size_t(t * exp.slots + j)];
            if (e == kDroppedExpert) {
              pad = true;
              EXPECT_EQ(w, 0.0f);
              continue;
            }
            EXPECT_FALSE(pad) << "added expert after padding, token " << t;
            EXPECT_GT(e, last);
            last = e;
            EXPECT_TRUE(placement.empty() || placement.device_of(e) == source);
            EXPECT_NEAR(w, b.scores[size_t(t * s.E + e)] * w_router / p_router, 1e-6);
          }
        }
        EXPECT_EQ(exp.outcome.load_after, loads(exp.ids, s.E));
        int64_t added = 0;
        for (int e = 0; e < s.E; ++e) added += exp.outcome.load_after[size_t(e)];
        EXPECT_EQ(exp.outcome.added, added - (exp.outcome.routed - exp.outcome.dropped));
      }
  // The rule that differs from "routed pairs first": some routed pair lost its place to a token
  // that did not route to that (local) expert but scores higher there.
  EXPECT_GT(routed_pairs_outranked, 0);
}

TEST(ExpandedDrop, RoutedPairCanLoseToAHigherScoringLocalCandidate) {
  // 4 tokens, 3 experts (all local: no placement), top-1, C = ceil(1.0 * 4 * 1 / 3) = 2.
  // Expert 0 is routed by tokens 0 (0.6) and 1 (0.4): within C, token drop keeps both. Token 2
  // routed to expert 1 but scores 0.45 on expert 0, above token 1: Algorithm 2 keeps 0 and 2.
  Batch b;
  b.T = 4, b.E = 3, b.k = 1;
  b.router.num_experts = 3, b.router.top_k = 1;
  b.scores = {0.6f, 0.3f, 0.1f, 0.4f, 0.3f, 0.3f, 0.45f, 0.5f, 0.05f, 0.2f, 0.1f, 0.7f};
  b.ids = {0, 0, 1, 2};
  b.weights = {0.6f, 0.4f, 0.5f, 0.7f};
  const Result r = run(b, config(CapacityPolicy::kExpanded, 1.0));
  EXPECT_EQ(tokens_of(r.ids, r.slots, 0), (std::set<int64_t>{0, 2}));
  EXPECT_EQ(r.ids[size_t(1 * r.slots)], kDroppedExpert);  // token 1's routed pair lost its place
  // Expert 1: every token a candidate (0.3, 0.3, 0.5, 0.1): token 2, then token 0 (tie: earlier).
  EXPECT_EQ(tokens_of(r.ids, r.slots, 1), (std::set<int64_t>{0, 2}));
  EXPECT_EQ(tokens_of(r.ids, r.slots, 2), (std::set<int64_t>{1, 3}));
  const Result drop = run(b, config(CapacityPolicy::kScore, 1.0));
  EXPECT_EQ(tokens_of(drop.ids, drop.slots, 0), (std::set<int64_t>{0, 1}));
}

// ---------------------------------------------------------------------------------------------
// Nothing overflows: bit for bit the router's table
// ---------------------------------------------------------------------------------------------

TEST(LargeGamma, EveryPolicyButExpandedIsDropless) {
  uint32_t seed = 500;
  for (const Shape& s : kShapes) {
    ++seed;
    const Batch b = make_batch(s.T, s.E, s.k, seed,
                               seed % 2 ? ScoreFunc::kSigmoid : ScoreFunc::kSoftmax, seed % 3 == 0);
    const Placement placement = s.E >= 3 ? Placement::from_map(
                                               [&] {
                                                 std::vector<int32_t> m(size_t(s.E), 2);
                                                 m[0] = 0;
                                                 m[1] = 1;
                                                 return m;
                                               }(),
                                               3)
                                         : Placement();
    const double gamma = double(s.E) / s.k + 1;  // C >= T: no expert can overflow
    const Result none = run(b, config(CapacityPolicy::kNone, gamma), placement);
    EXPECT_EQ(none.ids, b.ids);
    EXPECT_TRUE(same_bits(none.weights, b.weights));
    for (CapacityPolicy p :
         {CapacityPolicy::kScore, CapacityPolicy::kOrder, CapacityPolicy::kReverseOrder,
          CapacityPolicy::kRandom, CapacityPolicy::kReroute, CapacityPolicy::kDevice}) {
      const Result r = run(b, config(p, gamma), placement, 1);
      SCOPED_TRACE(::testing::Message()
                   << capacity_policy_name(p) << " T=" << s.T << " E=" << s.E << " k=" << s.k);
      EXPECT_EQ(r.ids, b.ids);
      EXPECT_TRUE(same_bits(r.weights, b.weights));
      EXPECT_EQ(r.outcome.load_after, r.outcome.load_before);
      EXPECT_EQ(r.outcome.dropped, 0);
      EXPECT_EQ(r.outcome.added, 0);
      EXPECT_EQ(r.outcome.overflow, 0);
    }
  }
}

TEST(DecodeStep, IsLeftAloneByDefault) {
  // The authors skip the policy when sequence_length == 1: a decode step, one token or a batch
  // of sequences each decoding one token (here 6 rows at gamma 0.01 would overflow).
  for (int64_t T : {1, 6}) {
    const Batch b = make_batch(T, 8, 3, 9);
    for (CapacityPolicy p : kAllPolicies) {
      const Result r = run(b, config(p, 0.01), Placement::contiguous(8, 2), 0, 0, true);
      for (int64_t t = 0; t < T; ++t)
        for (int j = 0; j < r.slots; ++j) {
          EXPECT_EQ(r.ids[size_t(t * r.slots + j)],
                    j < b.k ? b.ids[size_t(t * b.k + j)] : kDroppedExpert)
              << capacity_policy_name(p) << " T " << T;
          EXPECT_EQ(r.weights[size_t(t * r.slots + j)],
                    j < b.k ? b.weights[size_t(t * b.k + j)] : 0.0f);
        }
    }
  }
  // A one-token device slice of a prefill is not a decode step: processed (a single token
  // never overflows, C >= 1, but expanded drop adds the local experts).
  const Batch b = make_batch(1, 8, 3, 9);
  const Result r = run(b, config(CapacityPolicy::kExpanded, 0.01), Placement::contiguous(8, 2), 0);
  std::set<int32_t> held(r.ids.begin(), r.ids.end());
  for (int e = 0; e < 4; ++e) EXPECT_TRUE(held.count(e)) << "local expert " << e;
  // And a decode step when asked (--capacity-on-decode).
  CapacityConfig cfg = config(CapacityPolicy::kExpanded, 0.01);
  cfg.skip_single_token = false;
  const Result d = run(b, cfg, Placement::contiguous(8, 2), 0, 0, true);
  std::set<int32_t> held_d(d.ids.begin(), d.ids.end());
  for (int e = 0; e < 4; ++e) EXPECT_TRUE(held_d.count(e)) << "local expert " << e;
}

TEST(OutSlots, ExtraSlotsArePadding) {
  const Batch b = make_batch(90, 8, 2, 21);
  const Placement placement = Placement::contiguous(8, 3);
  for (CapacityPolicy p : kAllPolicies) {
    const CapacityConfig cfg = config(p, 0.5);
    const Result r = run(b, cfg, placement, 1);
    const int wide = r.slots + 3;
    std::vector<int32_t> ids(size_t(b.T * wide), 55);
    std::vector<float> w(ids.size(), 9.0f);
    CapacityOutcome o;
    o.reset(b.E);
    apply_capacity(cfg, b.router, b.scores.data(), b.ids.data(), b.weights.data(), b.T, placement,
                   1, CapacityCall{}, ids.data(), w.data(), wide, o);
    for (int64_t t = 0; t < b.T; ++t)
      for (int j = 0; j < wide; ++j) {
        const size_t i = size_t(t * wide + j), n = size_t(t * r.slots + j);
        EXPECT_EQ(ids[i], j < r.slots ? r.ids[n] : kDroppedExpert)
            << capacity_policy_name(p) << " " << t << "," << j;
        EXPECT_EQ(w[i], j < r.slots ? r.weights[n] : 0.0f);
      }
  }
}

TEST(NoTokens, EveryPolicyIsANoOp) {
  const Batch b = make_batch(0, 8, 2, 1);
  for (CapacityPolicy p : kAllPolicies) {
    const Result r = run(b, config(p, 1.5), Placement::contiguous(8, 3), 2);
    EXPECT_TRUE(r.ids.empty());
    EXPECT_EQ(r.outcome.routed, 0);
    EXPECT_EQ(r.outcome.dropped, 0);
    EXPECT_EQ(r.outcome.added, 0);
    EXPECT_EQ(r.outcome.load_after, std::vector<int64_t>(8, 0));
  }
}

// ---------------------------------------------------------------------------------------------
// Random drop
// ---------------------------------------------------------------------------------------------

TEST(RandomDrop, IsSeededAndReproducible) {
  const Batch b = make_batch(300, 8, 2, 42);
  CapacityConfig cfg = config(CapacityPolicy::kRandom, 0.5);
  cfg.seed = 1234;
  const Result a = run(b, cfg, Placement(), 0, 7);
  ASSERT_GT(a.outcome.dropped, 20);
  const Result again = run(b, cfg, Placement(), 0, 7);
  EXPECT_EQ(a.ids, again.ids);
  EXPECT_TRUE(same_bits(a.weights, again.weights));
  EXPECT_NE(a.ids, run(b, cfg, Placement(), 0, 8).ids) << "another rng_stream draws the same drops";
  cfg.seed = 1235;
  EXPECT_NE(a.ids, run(b, cfg, Placement(), 0, 7).ids) << "another seed draws the same drops";
  // and it is not simply score or order drop
  EXPECT_NE(a.ids, run(b, config(CapacityPolicy::kScore, 0.5)).ids);
  EXPECT_NE(a.ids, run(b, config(CapacityPolicy::kOrder, 0.5)).ids);
  EXPECT_NE(a.ids, run(b, config(CapacityPolicy::kReverseOrder, 0.5)).ids);
}

// ---------------------------------------------------------------------------------------------
// Reroute and device-level capacity
// ---------------------------------------------------------------------------------------------

TEST(Reroute, RespectsCapacityAndMovesOnlyToNewExperts) {
  uint32_t seed = 700;
  for (const Shape& s : kShapes)
    for (double gamma : {0.5, 1.0, 1.5})
      for (int rounds : {1, 3}) {
        const Batch b = make_batch(s.T, s.E, s.k, seed++);
        CapacityConfig cfg = config(CapacityPolicy::kReroute, gamma);
        cfg.reroute_rounds = rounds;
        const Result r = run(b, cfg);
        ASSERT_EQ(r.slots, s.k);
        const int64_t C = expert_capacity(gamma, s.T, s.k, s.E);
        for (int64_t n : loads(r.ids, s.E)) EXPECT_LE(n, C);
        for (int64_t t = 0; t < s.T; ++t) {
          std::set<int32_t> row;
          for (int j = 0; j < s.k; ++j) {
            const size_t i = size_t(t * s.k + j);
            const int32_t e = r.ids[i];
            if (e == kDroppedExpert) continue;
            EXPECT_TRUE(row.insert(e).second) << "token " << t << " holds expert " << e << " twice";
            if (e == b.ids[i]) {
              EXPECT_EQ(r.weights[i], b.weights[i]);
            }
          }
        }
        EXPECT_EQ(r.outcome.load_after, loads(r.ids, s.E));
        EXPECT_LE(r.outcome.rerouted, r.outcome.added);
        // a rerouted pair fills a slot that lost its pair: pairs never exceed the router's
        EXPECT_EQ(
            r.outcome.routed - r.outcome.dropped + r.outcome.added,
            std::accumulate(r.outcome.load_after.begin(), r.outcome.load_after.end(), int64_t(0)));
        EXPECT_LE(r.outcome.added, r.outcome.dropped);
        // rerouting never keeps fewer pairs than dropping them
        const Result drop = run(b, config(CapacityPolicy::kScore, gamma));
        EXPECT_LE(r.outcome.dropped - r.outcome.added, drop.outcome.dropped);
      }
}

TEST(DeviceCapacity, BoundsThePairsEachDeviceReceives) {
  uint32_t seed = 900;
  const std::vector<std::pair<int, std::vector<int32_t>>> maps = {
      {12, {0, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2}}, {8, {2, 0, 2, 1, 2, 2, 2, 2}}, {4, {0, 1, 2, 3}}};
  for (const auto& [E, map] : maps)
    for (int k : {1, 2, 3})
      for (double gamma : {0.5, 1.0, 1.5}) {
        const Placement placement =
            Placement::from_map(map, *std::max_element(map.begin(), map.end()) + 1);
        const int64_t T = 97;
        const Batch b = make_batch(T, E, k, seed++);
        const Result r = run(b, config(CapacityPolicy::kDevice, gamma), placement, 0);
        std::vector<int64_t> per_device(size_t(placement.num_devices()), 0), routed_to(per_device);
        for (int32_t e : r.ids)
          if (e != kDroppedExpert) ++per_device[size_t(placement.device_of(e))];
        for (int32_t e : b.ids) ++routed_to[size_t(placement.device_of(e))];
        for (int d = 0; d < placement.num_devices(); ++d) {
          const int n_d = int(placement.experts_on(d).size());
          const auto C_d = int64_t(std::ceil(gamma * double(T) * k * n_d / E));
          EXPECT_EQ(per_device[size_t(d)], std::min(routed_to[size_t(d)], C_d))
              << "device " << d << " E=" << E << " k=" << k << " gamma=" << gamma;
        }
        for (size_t i = 0; i < r.ids.size(); ++i)
          if (r.ids[i] != kDroppedExpert) {
            EXPECT_EQ(r.ids[i], b.ids[i]);
          }
      }
}

TEST(CapacityOutcome, AccumulatesCalls) {
  const Batch b = make_batch(120, 8, 2, 11);
  const Result a = run(b, config(CapacityPolicy::kExpanded, 0.5));
  const Result c = run(b, config(CapacityPolicy::kReroute, 0.5));
  CapacityOutcome sum;
  sum.reset(8);
  sum.accumulate(a.outcome);
  sum.accumulate(c.outcome);
  for (int e = 0; e < 8; ++e) {
    EXPECT_EQ(sum.load_before[size_t(e)],
              a.outcome.load_before[size_t(e)] + c.outcome.load_before[size_t(e)]);
    EXPECT_EQ(sum.load_after[size_t(e)],
              a.outcome.load_after[size_t(e)] + c.outcome.load_after[size_t(e)]);
  }
  EXPECT_EQ(sum.routed, a.outcome.routed + c.outcome.routed);
  EXPECT_EQ(sum.overflow, a.outcome.overflow + c.outcome.overflow);
  EXPECT_EQ(sum.dropped, a.outcome.dropped + c.outcome.dropped);
  EXPECT_EQ(sum.added, a.outcome.added + c.outcome.added);
  EXPECT_EQ(sum.rerouted, a.outcome.rerouted + c.outcome.rerouted);
  // apply_capacity adds to the outcome it is given
  CapacityOutcome twice;
  twice.reset(8);
  std::vector<int32_t> ids(size_t(120 * 2));
  std::vector<float> w(ids.size());
  for (int i = 0; i < 2; ++i)
    apply_capacity(config(CapacityPolicy::kReroute, 0.5), b.router, b.scores.data(), b.ids.data(),
                   b.weights.data(), b.T, Placement(), 0, CapacityCall{}, ids.data(), w.data(), 2,
                   twice);
  EXPECT_EQ(twice.dropped, 2 * c.outcome.dropped);
  EXPECT_EQ(twice.routed, 2 * c.outcome.routed);
}

// ---------------------------------------------------------------------------------------------
// Placement
// ---------------------------------------------------------------------------------------------

TEST(Placement, ContiguousGivesTheFirstDevicesOneMore) {
  const Placement p = Placement::contiguous(10, 4);
  EXPECT_EQ(p.num_devices(), 4);
  EXPECT_EQ(p.num_experts(), 10);
  EXPECT_EQ(p.experts_on(0), (std::vector<int32_t>{0, 1, 2}));
  EXPECT_EQ(p.experts_on(1), (std::vector<int32_t>{3, 4, 5}));
  EXPECT_EQ(p.experts_on(2), (std::vector<int32_t>{6, 7}));
  EXPECT_EQ(p.experts_on(3), (std::vector<int32_t>{8, 9}));
  for (int e = 0; e < 10; ++e) EXPECT_EQ(p.device_of(e), e < 3 ? 0 : e < 6 ? 1 : e < 8 ? 2 : 3);
  EXPECT_EQ(Placement::contiguous(5, 5).experts_on(4), (std::vector<int32_t>{4}));
  EXPECT_EQ(Placement::contiguous(5, 1).experts_on(0).size(), 5u);
  expect_message([] { Placement::contiguous(4, 0); }, {"0"});
  expect_message([] { Placement::contiguous(4, -2); }, {"-2"});
  expect_message([] { Placement::contiguous(4, 5); }, {"5", "4"});  // more devices than experts
  EXPECT_TRUE(Placement().empty());
}

TEST(Placement, FromMapValidates) {
  const Placement p = Placement::from_map({2, 0, 2, 1}, 3);
  EXPECT_EQ(p.experts_on(2), (std::vector<int32_t>{0, 2}));
  EXPECT_EQ(p.device_of(3), 1);
  expect_message([] { Placement::from_map({0, 3, 1}, 2); }, {"expert 1", "3"});    // out of range
  expect_message([] { Placement::from_map({0, -1, 1}, 2); }, {"expert 1", "-1"});  // unassigned
  expect_message([] { Placement::from_map({0, 0, 2}, 3); }, {"device 1"});         // empty device
  expect_message(
      [] {
        Placement::from_map({0, 1}, 3);
      },
      {"device 2"});  // more devices than experts
  EXPECT_THROW(Placement::from_map({0, 1}, 0), Error);
}

class PlacementFile : public ::testing::Test {
 protected:
  std::string write(const std::string& text) {
    const std::string path =
        (std::filesystem::temp_directory_path() /
         ("sy_placement_" + std::to_string(::getpid()) + "_" + std::to_string(n_++) + ".txt"))
            .string();
    std::ofstream(path) << text;
    paths_.push_back(path);
    return path;
  }
  void TearDown() override {
    for (const auto& p : paths_) std::remove(p.c_str());
  }
  std::vector<std::string> paths_;
  int n_ = 0;
};

TEST_F(PlacementFile, ReadsDevicesCommentsAndBlankLines) {
  const std::string path = write("# two devices\n0 1 5   # the first\n\n  2 3 4\n");
  const Placement p = Placement::from_file(path, 6);
  EXPECT_EQ(p.num_devices(), 2);
  EXPECT_EQ(p.experts_on(0), (std::vector<int32_t>{0, 1, 5}));
  EXPECT_EQ(p.experts_on(1), (std::vector<int32_t>{2, 3, 4}));
  EXPECT_EQ(p.device_of(5), 0);
}

TEST_F(PlacementFile, NamesTheFileLineAndProblem) {
  std::string path = write("0 1\n2\n");
  expect_message([&] { Placement::from_file(path, 4); }, {path, "expert 3"});  // missing expert 3
  path = write("0 1\n# c\n1 2 3\n");
  expect_message([&] { Placement::from_file(path, 4); }, {path, ":3", "expert 1"});  // duplicate
  path = write("0 1\n2 7\n");
  expect_message([&] { Placement::from_file(path, 4); }, {path, ":2", "7"});  // out of range
  path = write("0 1\n2 -1 3\n");
  expect_message([&] { Placement::from_file(path, 4); }, {path, ":2", "-1"});
  path = write("0 1\n2 x3\n");
  expect_message([&] { Placement::from_file(path, 4); }, {path, ":2", "x3"});  // not a number
  path = write("0\n1\n2\n3\n0\n");
  expect_message([&] { Placement::from_file(path, 4); },
                 {path, ":5"});  // more devices than experts
  path = write("# nothing\n\n");
  expect_message([&] { Placement::from_file(path, 4); }, {path});
  expect_message([] { Placement::from_file("/nonexistent/placement.txt", 4); },
                 {"/nonexistent/placement.txt"});
}

// The settings table: every field of CapacityConfig once, text round trips, bad values named.
TEST(CapacitySettings, RoundTripAndRejectBadValues) {
  CapacityConfig c;
  c.policy = CapacityPolicy::kReroute;
  c.factor = 1.25;
  c.renormalize = true;
  c.skip_single_token = false;
  c.reroute_rounds = 5;
  c.seed = 77;
  c.drop_major = 0.07;
  c.drop_minor = 0.09;
  c.load_aware = true;
  CapacityConfig back;
  for (const CapacitySetting& s : capacity_settings()) s.set(back, s.get(c), s.key);
  EXPECT_EQ(back.policy, c.policy);
  EXPECT_EQ(back.factor, c.factor);
  EXPECT_EQ(back.renormalize, c.renormalize);
  EXPECT_EQ(back.skip_single_token, c.skip_single_token);
  EXPECT_EQ(back.reroute_rounds, c.reroute_rounds);
  EXPECT_EQ(back.seed, c.seed);
  EXPECT_EQ(back.drop_major, c.drop_major);
  EXPECT_EQ(back.drop_minor, c.drop_minor);
  EXPECT_EQ(back.load_aware, c.load_aware);
  EXPECT_EQ(capacity_settings().size(), 8u) << "a CapacityConfig field without a setting?";

  auto setting = [](std::string_view key) -> const CapacitySetting& {
    for (const CapacitySetting& s : capacity_settings())
      if (key == s.key) return s;
    throw std::runtime_error("no setting " + std::string(key));
  };
  CapacityConfig d;
  sy::testing::expect_error([&] { setting("capacity_factor").set(d, "0", "--capacity-factor"); },
                            {"--capacity-factor", "positive"});
  sy::testing::expect_error([&] { setting("capacity_factor").set(d, "x", "--capacity-factor"); },
                            {"--capacity-factor", "'x'"});
  sy::testing::expect_error([&] { setting("capacity_policy").set(d, "fastest", "p"); },
                            {"fastest", "valid"});
  sy::testing::expect_error([&] { setting("capacity_reroute_rounds").set(d, "0", "r"); },
                            {"between 1 and 1000"});
  setting("capacity_skip_single_token").on_switch(d);  // --capacity-on-decode
  EXPECT_FALSE(d.skip_single_token);
  sy::testing::expect_error(
      [&] { setting("drop_threshold").set(d, "0.3,0.1", "--drop-threshold"); },
      {"out of order", "0.3", "0.1"});
  sy::testing::expect_error([&] { setting("drop_threshold").set(d, "1.5", "--drop-threshold"); },
                            {"[0, 1]"});
}

// 1T / 2T-Drop on hand-made routing: shares are weight / the token's total weight, summed
// over a partitioned expert's parts (ids 2e, 2e + 1 with two sub-experts).
TEST(ThresholdDrop, SkipsSmallSharesAndRunsMajorPartsBetweenThresholds) {
  Batch b;
  b.T = 2, b.E = 8, b.k = 4;
  b.router.num_experts = 8, b.router.top_k = 4;
  b.scores.assign(16, 0.1f);
  // Token 0 (total 0.7): expert 0 (parts 0, 1) has share 0.857, expert 2 (parts 4, 5) 0.143.
  // Token 1 (total 0.4): expert 1 (parts 2, 3) 0.8, expert 3 (parts 6, 7) 0.2.
  b.ids = {0, 1, 4, 5, /* token 1 */ 2, 3, 6, 7};
  b.weights = {0.30f, 0.30f, 0.05f, 0.05f, /* token 1 */ 0.16f, 0.16f, 0.04f, 0.04f};
  CapacityConfig c = config(CapacityPolicy::kThreshold, 1.0);
  b.router.sub_experts = 2;
  c.drop_major = c.drop_minor = 0.15;  // 1T: only token 0's expert 2 (0.143) goes
  Result r = run(b, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, kDroppedExpert, kDroppedExpert, 2, 3, 6, 7}));
  EXPECT_FLOAT_EQ(r.weights[0], 0.30f);  // kept pairs keep their weight
  EXPECT_EQ(r.outcome.dropped, 2);
  c.drop_major = 0.1, c.drop_minor = 0.9;  // 2T: every share is between: major parts only
  r = run(b, c);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, kDroppedExpert, 4, kDroppedExpert, 2, kDroppedExpert, 6,
                                         kDroppedExpert}));
  c.drop_major = c.drop_minor = 0.0;                       // nothing below 0
  r = run(b, c, Placement(), 0, 0, /*decode_step=*/true);  // decode steps too
  EXPECT_EQ(r.ids, b.ids);
  c.drop_major = c.drop_minor = 0.15;
  b.router.sub_experts = 1;  // unpartitioned: each id its own expert; shares 0.43 0.43 0.07 0.07
                             // and 0.4 0.4 0.1 0.1
  r = run(b, c, Placement(), 0, 0, true);
  EXPECT_EQ(r.ids, (std::vector<int32_t>{0, 1, kDroppedExpert, kDroppedExpert, 2, 3, kDroppedExpert,
                                         kDroppedExpert}));
}

}  // namespace
}  // namespace sy::moe

namespace sy::moe {
namespace {

TEST(RandomDrop, DrawsAnewInEveryCallAndReplays) {
  const Batch b = make_batch(200, 8, 2, 41);
  MoeRuntime rt;
  rt.capacity = config(CapacityPolicy::kRandom, 0.5);
  rt.capacity.seed = 9;
  auto drops = [&](uint64_t call) {
    rt.forward_calls = call;
    const int slots = capacity_slots(rt.capacity, b.k, b.E, rt.placement);
    std::vector<int32_t> ids(size_t(b.T * slots));
    std::vector<float> w(ids.size());
    CapacityOutcome o;
    o.reset(b.E);
    apply_capacity_per_device(rt, b.router, 3, b.T, b.scores.data(), b.ids.data(), b.weights.data(),
                              slots, ids.data(), w.data(), o);
    return ids;
  };
  const auto first = drops(1), second = drops(2), again = drops(1);
  EXPECT_NE(first, second) << "the same pairs won in two calls";
  EXPECT_EQ(first, again) << "a call's draw must replay";
}

}  // namespace
}  // namespace sy::moe
