#include "moe/router.h"

#include <algorithm>
#include <cmath>
#include <fmt/format.h>
#include <numeric>

#include "util/error.h"

namespace sy::moe {

std::string RouterConfig::describe() const {
  std::string s = score == ScoreFunc::kSoftmax ? "softmax" : "sigmoid";
  if (has_selection_bias) s += " + selection bias";
  if (num_groups > 1)
    s += fmt::format(" -> top-{} of {} groups ({})", topk_groups, num_groups,
                     group_score == GroupScore::kMax ? "max" : "top-2 sum");
  s += fmt::format(" -> top-{} of {}", top_k, num_experts);
  if (renormalize) s += " -> renormalise";
  if (routed_scaling_factor != 1.0f) s += fmt::format(" -> x{}", routed_scaling_factor);
  return s;
}

namespace {

// Indices of the k largest values, descending; ties go to the lower index.
void top_k_indices(const float* values, int n, int k, int32_t* out, int32_t* scratch) {
  std::iota(scratch, scratch + n, 0);
  std::partial_sort(scratch, scratch + k, scratch + n, [values](int32_t a, int32_t b) {
    return values[a] > values[b] || (values[a] == values[b] && a < b);
  });
  std::copy(scratch, scratch + k, out);
}

}  // namespace

void route(const RouterConfig& cfg, const float* logits, int64_t num_tokens,
           const float* selection_bias, int32_t* ids, float* weights, float* scores_out) {
  const int E = cfg.num_experts, K = cfg.top_k;
  SY_ASSERT(E > 0 && K > 0 && K <= E);
  SY_ASSERT(cfg.num_groups >= 1 && E % cfg.num_groups == 0);
  SY_ASSERT(cfg.topk_groups >= 1 && cfg.topk_groups <= cfg.num_groups);
  SY_ASSERT(!cfg.has_selection_bias || selection_bias != nullptr);
  std::vector<float> p(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  std::vector<int32_t> scratch(static_cast<size_t>(E));
  std::vector<int32_t> group_ids(static_cast<size_t>(cfg.num_groups));
  std::vector<float> group_scores(static_cast<size_t>(cfg.num_groups));

  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* x = logits + t * E;
    if (cfg.score == ScoreFunc::kSoftmax) {
      const float m = *std::max_element(x, x + E);
      double sum = 0;
      for (int e = 0; e < E; ++e) sum += (p[e] = std::exp(x[e] - m));
      const float inv = float(1.0 / sum);
      for (int e = 0; e < E; ++e) p[e] *= inv;
    } else {
      for (int e = 0; e < E; ++e) p[e] = 1.0f / (1.0f + std::exp(-x[e]));
    }
    if (scores_out) std::copy(p.begin(), p.end(), scores_out + t * E);
    for (int e = 0; e < E; ++e) choice[e] = p[e] + (cfg.has_selection_bias ? selection_bias[e] : 0);

    if (cfg.num_groups > 1) {
      const int per_group = E / cfg.num_groups;
      for (int g = 0; g < cfg.num_groups; ++g) {
        const float* member = choice.data() + g * per_group;
        if (cfg.group_score == GroupScore::kMax || per_group < 2) {
          group_scores[g] = *std::max_element(member, member + per_group);
        } else {
          int32_t best[2];
          top_k_indices(member, per_group, 2, best, scratch.data());
          group_scores[g] = member[best[0]] + member[best[1]];
        }
      }
      top_k_indices(group_scores.data(), cfg.num_groups, cfg.topk_groups, group_ids.data(),
                    scratch.data());
      // Experts of unselected groups get score 0, as the reference implementations mask.
      std::vector<bool> keep(size_t(cfg.num_groups), false);
      for (int i = 0; i < cfg.topk_groups; ++i) keep[group_ids[i]] = true;
      for (int e = 0; e < E; ++e)
        if (!keep[e / per_group]) choice[e] = 0.0f;
    }

    int32_t* id = ids + t * K;
    float* w = weights + t * K;
    top_k_indices(choice.data(), E, K, id, scratch.data());
    double sum = 0;
    for (int i = 0; i < K; ++i) sum += (w[i] = p[id[i]]);
    if (cfg.renormalize) {
      const float denom = float(sum) + cfg.renormalize_epsilon;
      for (int i = 0; i < K; ++i) w[i] /= denom;
    }
    if (cfg.routed_scaling_factor != 1.0f)
      for (int i = 0; i < K; ++i) w[i] *= cfg.routed_scaling_factor;
  }
}

}  // namespace sy::moe
