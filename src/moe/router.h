// Router: turns per-token expert logits into top-k expert ids and combine weights, in
// exactly the variants the supported model families use (formats.md section 4).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::moe {

enum class ScoreFunc : uint8_t {
  kSoftmax,  // p = softmax(all logits) (Mixtral, Qwen-MoE, OLMoE, DeepSeek-V2)
  kSigmoid,  // p = sigmoid(logits)     (DeepSeek-V3 / dots.llm1)
};

enum class GroupScore : uint8_t {
  kMax,      // group score = max member score (DeepSeek-V2 group_limited_greedy)
  kTop2Sum,  // group score = sum of the top-2 member scores (DeepSeek-V3 noaux_tc)
};

struct RouterConfig {
  int num_experts = 0;
  int top_k = 0;
  ScoreFunc score = ScoreFunc::kSoftmax;
  bool renormalize = false;            // w /= sum(w) over the selected experts
  float renormalize_epsilon = 0.0f;    // added to the sum (DeepSeek-V3 uses 1e-20)
  float routed_scaling_factor = 1.0f;  // w *= factor after renormalisation
  bool has_selection_bias = false;     // bias added for selection only (aux-loss-free)
  int num_groups = 1;                  // group-limited top-k when > 1
  int topk_groups = 1;
  GroupScore group_score = GroupScore::kTop2Sum;

  std::string describe() const;  // e.g. "softmax -> top-2 -> renormalise"
};

// Routes `num_tokens` rows of logits [num_tokens, num_experts] (float32).
//   selection_bias: [num_experts] or nullptr.
//   ids / weights:  [num_tokens, top_k], ids in descending order of selection score.
//   scores (optional, may be nullptr): [num_tokens, num_experts] router probabilities p.
// Ties resolve to the lower expert id, as torch.topk does on CPU.
void route(const RouterConfig& config, const float* logits, int64_t num_tokens,
           const float* selection_bias, int32_t* ids, float* weights, float* scores = nullptr);

}  // namespace sy::moe
