// causal_attention (model/attention.h) against a naive loop in double precision: every query
// row, head and visible key one by one, with the mask written from the definitions (causal;
// sliding window: the last `window` positions; chunked: the positions of the query's own chunk;
// a sink logit joining each softmax). The shapes put query blocks (64 rows) far past the first
// key, behind a cached prefix, so the kernel's skipping of keys before a window or chunk runs.
#include <gtest/gtest.h>

#include <cmath>
#include <random>
#include <vector>

#include "model/attention.h"

namespace sy::model {
namespace {

std::vector<float> naive(const AttentionShape& s, const std::vector<float>& q, int64_t n,
                         int64_t pos0, const std::vector<float>& k, const std::vector<float>& v) {
  const int64_t hd = s.head_dim, qw = s.num_heads * hd, kvw = s.num_kv_heads * hd;
  std::vector<float> out(size_t(n * qw));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t p = pos0 + i;  // the query's position
    for (int64_t h = 0; h < s.num_heads; ++h) {
      const int64_t kh = h / (s.num_heads / s.num_kv_heads);
      std::vector<double> w;
      std::vector<int64_t> keys;
      for (int64_t j = 0; j <= p; ++j) {
        if (s.window > 0 && j <= p - s.window) continue;
        if (s.chunk > 0 && j / s.chunk != p / s.chunk) continue;
        double dot = 0;
        for (int64_t d = 0; d < hd; ++d)
          dot += double(q[size_t(i * qw + h * hd + d)]) * k[size_t(j * kvw + kh * hd + d)];
        w.push_back(dot * s.scale);
        keys.push_back(j);
      }
      double mx = s.sinks ? s.sinks[h] : -INFINITY, sum = 0;
      for (double x : w) mx = std::max(mx, x);
      for (double& x : w) sum += (x = std::exp(x - mx));
      if (s.sinks) sum += std::exp(s.sinks[h] - mx);
      for (int64_t d = 0; d < hd; ++d) {
        double acc = 0;
        for (size_t t = 0; t < keys.size(); ++t)
          acc += w[t] / sum * v[size_t(keys[t] * kvw + kh * hd + d)];
        out[size_t(i * qw + h * hd + d)] = float(acc);
      }
    }
  }
  return out;
}

struct Case {
  const char* name;
  int64_t window, chunk;
  bool sinks;
  int64_t pos0, n;
};

TEST(Attention, MatchesNaiveLoopWithWindowsChunksSinksAndCache) {
  const Case cases[] = {
      {"causal", 0, 0, false, 0, 150},
      {"window 40, prefill", 40, 0, false, 0, 200},
      {"window 40, after 90 cached", 40, 0, true, 90, 130},
      {"chunk 48, prefill", 0, 48, false, 0, 200},
      {"chunk 48, after 70 cached", 0, 48, false, 70, 100},
      {"chunk 48, decode step", 0, 48, false, 150, 1},
      {"window 16 and sinks, decode step", 16, 0, true, 199, 1},
  };
  std::mt19937 rng(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t nh = 4, nkv = 2, hd = 16;
  const std::vector<float> sinks = {0.3f, -1.0f, 2.0f, 0.0f};
  for (const Case& c : cases) {
    SCOPED_TRACE(c.name);
    const int64_t total = c.pos0 + c.n;
    std::vector<float> q(size_t(c.n * nh * hd)), k(size_t(total * nkv * hd)), v(k.size());
    for (float& x : q) x = normal(rng);
    for (float& x : k) x = normal(rng);
    for (float& x : v) x = normal(rng);
    AttentionShape s{nh, nkv, hd, 0.25f, c.window, c.chunk, c.sinks ? sinks.data() : nullptr};
    std::vector<float> got(q.size());
    causal_attention(s, q.data(), c.n, c.pos0, k.data(), v.data(), got.data());
    const std::vector<float> want = naive(s, q, c.n, c.pos0, k, v);
    double worst = 0;
    for (size_t i = 0; i < got.size(); ++i)
      worst = std::max(worst, double(std::fabs(got[i] - want[i])));
    EXPECT_LE(worst, 2e-5);  // float32 sums of up to 200 terms of unit size
  }
}

}  // namespace
}  // namespace sy::model
