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

 private:
  SamplerConfig config_;
  std::mt19937_64 rng_;
  std::vector<std::pair<float, int32_t>> candidates_;
};

}  // namespace sy::model
