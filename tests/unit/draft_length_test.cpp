// DraftLengthModel (model/draft_length.h) on steps whose costs come from known formulas: after
// exploring, its predictions match the formula, and it picks the k that maximises expected
// tokens per second, computed here by brute force from the same formulas.
#include <gtest/gtest.h>

#include <cmath>

#include "model/draft_length.h"

namespace sy::model {
namespace {

struct World {  // the "true" costs of a run
  double t_draft = 0.002, c0 = 0.01, c1 = 0.0005, c2 = 0.0, a = 0.8;
  int64_t pairs = 0;
  double verify(int64_t b, int k) const { return c0 + c1 * double(b * (k + 1)); }
  double rate(int64_t b, int k) const {  // k = 0: a plain step, one token per sequence
    const double tokens = double(b) * (1 - std::pow(a, k + 1)) / (1 - a);
    return tokens / (k * t_draft + verify(b, k));
  }
};

// Feeds `steps` steps with acceptance matching `a` on average (accepted = round over b).
void run(DraftLengthModel& m, const World& w, int64_t b, int steps, std::vector<int>& chosen) {
  for (int s = 0; s < steps; ++s) {
    const int k = m.choose(b);
    chosen.push_back(k);
    // Expected accepted tokens of a sequence: sum_{i=1..k} a^i; rejections: 1 - a^k.
    double acc = 0;
    for (int i = 1; i <= k; ++i) acc += std::pow(w.a, i);
    const auto accepted = int64_t(std::llround(acc * double(b)));
    const auto rejected = int64_t(std::llround((1 - std::pow(w.a, k)) * double(b)));
    m.record(k, b, k * w.t_draft, w.verify(b, k), 0, accepted, rejected);
  }
}

TEST(DraftLength, ExploresThenPicksTheBestKAndPredictsTheStepTime) {
  const World w;
  DraftLengthModel m(8, 0);
  std::vector<int> chosen;
  run(m, w, 4, 20, chosen);
  EXPECT_EQ(chosen[0], 0);
  EXPECT_EQ(chosen[1], 1);
  EXPECT_EQ(chosen[2], 2);
  EXPECT_EQ(chosen[3], 4);
  int best = 0;
  for (int k = 1; k <= 8; ++k)
    if (w.rate(4, k) > w.rate(4, best)) best = k;
  EXPECT_EQ(chosen.back(), best);
  EXPECT_LT(m.mean_abs_error(), 0.05);
  // The acceptance estimate accepted / (accepted + rejected) recovers a.
  EXPECT_NEAR(m.acceptance(), w.a, 0.05);
}

TEST(DraftLength, CheapVerificationFavoursLongDrafts) {
  World cheap;
  cheap.c1 = 0.0;  // verifying more positions costs nothing: only the draft's time grows
  cheap.t_draft = 0.0001;
  cheap.a = 0.95;
  DraftLengthModel m(8, 0);
  std::vector<int> chosen;
  run(m, cheap, 2, 12, chosen);
  EXPECT_EQ(chosen.back(), 8);
  World dear;  // a poor draft whose every call costs twice a verification: plain steps win
  dear.t_draft = 0.02;
  dear.a = 0.3;
  EXPECT_GT(dear.rate(2, 0), dear.rate(2, 1));
  DraftLengthModel m2(8, 0);
  chosen.clear();
  run(m2, dear, 2, 12, chosen);
  EXPECT_EQ(chosen.back(), 0);
}

}  // namespace
}  // namespace sy::model
