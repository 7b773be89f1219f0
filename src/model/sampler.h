// Picks the next token from logits: greedy, or temperature + top-k + top-p sampling with
// a seeded generator (same seed, same text).
#pragma once

#include <cstdint>
#include <random>
#include <vector>

namespace sy::model {

struct SamplerConfig {
  float temperature = 0.0f;  // 0 = greedy
  int top_k = 0;             // 0 = all tokens
  float top_p = 1.0f;        // nucleus mass kept
  uint64_t seed = 0;
};

class Sampler {
 public:
  explicit Sampler(const SamplerConfig& config);
  int32_t sample(const float* logits, int64_t vocab_size);

  bool greedy() const { return config_.temperature <= 0.0f; }
  // The distribution sample() draws from (temperature, top-k, top-p applied), dense over the
  // vocabulary: probs[i] = 0 outside the kept tokens. Not for greedy samplers.
  void distribution(const float* logits, int64_t vocab_size, std::vector<float>& probs);
  // A draw from a dense distribution whose entries sum to `total` (> 0).
  int32_t draw(const std::vector<float>& probs, double total);
  double uniform();  // in [0, 1)

 private:
  // Fills candidates_ with the kept tokens' unnormalised probabilities, descending; returns how
  // many are kept and their sum.
  std::pair<size_t, double> filter(const float* logits, int64_t vocab_size);

  SamplerConfig config_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace sy::model
