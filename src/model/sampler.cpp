#include "model/sampler.h"

#include <algorithm>
#include <cmath>

#include "util/error.h"

namespace sy::model {

Sampler::Sampler(const SamplerConfig& config) : config_(config), rng_(config.seed) {}

std::pair<size_t, double> Sampler::filter(const float* logits, int64_t V) {
  candidates_.resize(size_t(V));
  for (int64_t i = 0; i < V; ++i)
    candidates_[size_t(i)] = {logits[i] / config_.temperature, int32_t(i)};
  auto by_logit = [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  };
  size_t n = size_t(V);
  if (config_.top_k > 0 && size_t(config_.top_k) < n) {
    std::partial_sort(candidates_.begin(), candidates_.begin() + config_.top_k, candidates_.end(),
                      by_logit);
    n = size_t(config_.top_k);
  } else {
    std::sort(candidates_.begin(), candidates_.end(), by_logit);
  }
  // Softmax over the kept candidates (sorted descending), then the nucleus cut.
  const float max = candidates_[0].first;
  double sum = 0;
  for (size_t i = 0; i < n; ++i)
    sum += (candidates_[i].first = std::exp(candidates_[i].first - max));
  if (config_.top_p < 1.0f) {
    double mass = 0;
    size_t keep = 0;
    while (keep < n) {
      mass += candidates_[keep].first / sum;
      ++keep;
      if (mass >= config_.top_p) break;
    }
    n = keep;
    sum = 0;
    for (size_t i = 0; i < n; ++i) sum += candidates_[i].first;
  }
  return {n, sum};
}

int32_t Sampler::sample(const float* logits, int64_t V) {
  if (greedy())  // ties go to the lower id, as argmax does
    return int32_t(std::max_element(logits, logits + V) - logits);
  const auto [n, sum] = filter(logits, V);
  std::uniform_real_distribution<double> uniform(0.0, sum);
  double r = uniform(rng_);
  for (size_t i = 0; i < n; ++i) {
    r -= candidates_[i].first;
    if (r <= 0) return candidates_[i].second;
  }
  return candidates_[n - 1].second;
}

void Sampler::distribution(const float* logits, int64_t V, std::vector<float>& probs) {
  SY_ASSERT(!greedy());
  const auto [n, sum] = filter(logits, V);
  probs.assign(size_t(V), 0.0f);
  for (size_t i = 0; i < n; ++i)
    probs[size_t(candidates_[i].second)] = float(candidates_[i].first / sum);
}

int32_t Sampler::draw(const std::vector<float>& probs, double total) {
  SY_ASSERT(total > 0);
  double r = uniform() * total;
  int32_t last = -1;
  for (size_t i = 0; i < probs.size(); ++i) {
    if (probs[i] <= 0) continue;
    last = int32_t(i);
    r -= probs[i];
    if (r < 0) return last;
  }
  SY_ASSERT(last >= 0);
  return last;  // rounding left a sliver: the last token with mass
}

double Sampler::uniform() {
  return std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
}

}  // namespace sy::model
