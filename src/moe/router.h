// Router: turns per-token expert logits into expert ids and combine weights. Covers the
// variants the supported model families use (formats.md section 4) and the gating functions
// of the MoE survey (papers.md section 2): token choice with softmax / sigmoid scores before
// or after top-k, noisy top-k gating (Shazeer et al. 2017) and expert choice (Zhou et al. 2022).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy::moe {

// Where the score function sits relative to top-k. "Selection values" are what top-k ranks.
enum class ScoreFunc : uint8_t {
  // Score first, then top-k on the scores; weights = the selected scores.
  kSoftmax,  // p = softmax(all logits) (Mixtral, Qwen-MoE, OLMoE, DeepSeek-V2)
  kSigmoid,  // p = sigmoid(logits)     (DeepSeek-V3 / dots.llm1)
  // Top-k first on the raw logits, then the score function over the k selected logits.
  //   kSoftmaxTopK: weights = softmax over the k selected logits (GShard / Switch style;
  //     equals Mixtral's softmax -> top-k -> renormalise up to rounding, and is the survey's
  //     G(x) = softmax(TopK(g(x), k))).
  //   kSigmoidTopK: weights = sigmoid of the k selected logits.
  // In both, the `scores` output is still the score function over ALL logits (full softmax,
  // or sigmoid of every logit): the capacity policies use scores as pair priority.
  kSoftmaxTopK,
  kSigmoidTopK,
  // Phi-3.5-MoE's SparseMixer at inference (top-2 only): the first expert is the top logit,
  // weighted by the softmax over the logits within a relative margin 2 eps of it
  // ((max - x) / max(|x|, max) <= 2 eps); the second the top of the rest, weighted the same way
  // among the rest (eps = sparsemixer_eps, Phi's router_jitter_noise). Inference only.
  kSparseMixer,
};

// Command-line / config names: softmax, sigmoid, softmax-topk, sigmoid-topk.
std::string_view score_func_name(ScoreFunc score);
ScoreFunc parse_score_func(std::string_view name);  // sy::Error listing the valid names

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
  float sparsemixer_eps = 0.0f;  // kSparseMixer's margin
  // Expert partition (DualSparse-MoE; model/expert_partition.h): ids e P .. e P + P - 1 are
  // the P parts of one expert (P = sub_experts).
  int sub_experts = 1;
  // Partial transformation: the gate keeps one logit per whole expert (num_logits() of them),
  // routes top-(top_k / P) over them as the source model did, and each selected expert then
  // routes to all of its parts, each with the expert's weight. False: the complete
  // transformation, whose gate has a row per part and routes top_k parts itself.
  bool expand_parts = false;

  int num_logits() const { return expand_parts ? num_experts / sub_experts : num_experts; }
  std::string describe() const;  // e.g. "softmax -> top-2 -> renormalise"
};

// A RouterConfig as one JSON object and back (routing traces store it; unknown keys and
// mistyped values are errors naming `where`).
std::string router_config_json(const RouterConfig& router);
RouterConfig parse_router_config_json(const std::string& text, const std::string& where);

// Routes `num_tokens` rows of logits [num_tokens, num_logits()] (float32).
//   selection_bias: [num_logits()] or nullptr.
//   ids / weights:  [num_tokens, top_k], ids in descending order of selection value.
//   scores (optional, may be nullptr): [num_tokens, num_experts] router probabilities p
//     (softmax or sigmoid over all logits, for every ScoreFunc; with expand_parts each part
//     has its expert's p).
// Selection values: kSoftmax / kSigmoid rank p + bias, and experts outside the kept groups
// get 0.0 (as the Hugging Face code masks); kSoftmaxTopK / kSigmoidTopK rank logits + bias,
// and experts outside the kept groups get -inf (they need top_k <= topk_groups * group size).
// Group scores are computed from the selection values. The bias never enters the weights.
// Ties resolve to the lower expert id, as torch.topk does on CPU.
void route(const RouterConfig& config, const float* logits, int64_t num_tokens,
           const float* selection_bias, int32_t* ids, float* weights, float* scores = nullptr);

// Noisy top-k gating (Shazeer et al. 2017; survey: G(x) = softmax(TopK(g(x) + R_noise, k))):
//   H = logits + eps * softplus(noise_logits),  eps ~ N(0, 1),
// then exactly route(config, H, ...) without selection bias, so `scores` = the score
// function over all of H. The paper's gate is config.score = kSoftmaxTopK (softmax over the
// top-k of H; scores = softmax(H)); other score functions give their noisy variants.
//   noise_logits: [T, num_logits()] the noise projection x . W_noise.
//   eps: counter-based, eps(seed, stream, t, e) for token row t of this call -- the same on
//     every platform and independent of threading; use `stream` for the layer / step.
//   noise_out (may be nullptr): [T, num_logits()] the sampled eps * softplus(noise_logits), for the
//     backward pass; H is float(logits + noise_out) bit for bit.
void route_noisy(const RouterConfig& config, const float* logits, const float* noise_logits,
                 int64_t num_tokens, uint64_t seed, uint64_t stream, int32_t* ids, float* weights,
                 float* scores, float* noise_out);

// The standard normal sample route_noisy uses for element `index` (= t * E + e) of a call.
float noisy_gating_normal(uint64_t seed, uint64_t stream, uint64_t index);

// Expert-choice routing (Zhou et al. 2022): affinity S = softmax over experts of each token's
// logits; each expert picks its min(C, T) highest-affinity tokens, C = expert_choice_capacity.
// A token may get 0..E experts. Output is a [T, E] slot table (top_k = E for dispatch):
//   ids[t, e] = e if expert e chose token t, else kDroppedExpert (-1);
//   weights[t, e] = S[t, e] if chosen, else 0;
//   scores (may be nullptr): [T, E] = S.
// Ties in affinity keep the earlier token.
void route_expert_choice(const float* logits, int64_t num_tokens, int num_experts,
                         double capacity_factor, int32_t* ids, float* weights, float* scores);

// C = ceil(capacity_factor * T / E) (capacity_factor >= 0). A quotient within 1e-9 relative
// of an integer counts as that integer (1.1 * 10 / 1 -> 11, not 12).
int64_t expert_choice_capacity(double capacity_factor, int64_t num_tokens, int num_experts);

std::string describe_expert_choice(int num_experts, double capacity_factor);

}  // namespace sy::moe
