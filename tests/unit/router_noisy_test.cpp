// Noisy top-k gating (route_noisy, papers.md section 2) against the plain double-precision
// top-k-first reference of router_test_util.h:
//   noisy: H = float(logits + noise_out), then the top-k-first reference on H;
// the noise itself is eps(seed, stream, t * E + e) * softplus(noise_logits), eps N(0, 1).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "moe/router.h"
#include "router_test_util.h"

namespace sy::moe {
namespace {

using namespace router_test_util;

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

}  // namespace
}  // namespace sy::moe
