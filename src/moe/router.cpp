#include "moe/router.h"

#include <nlohmann/json.hpp>

#include <fmt/format.h>
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "moe/dispatch.h"
#include "util/error.h"
#include "util/json_bounded.h"
#include "util/splitmix64.h"

namespace sy::moe {

namespace {

struct ScoreFuncName {
  ScoreFunc score;
  std::string_view name;
};
constexpr ScoreFuncName kScoreFuncNames[] = {
    {ScoreFunc::kSoftmax, "softmax"},          {ScoreFunc::kSigmoid, "sigmoid"},
    {ScoreFunc::kSoftmaxTopK, "softmax-topk"}, {ScoreFunc::kSigmoidTopK, "sigmoid-topk"},
    {ScoreFunc::kSparseMixer, "sparsemixer"},
};

bool top_k_first(ScoreFunc s) {
  return s == ScoreFunc::kSoftmaxTopK || s == ScoreFunc::kSigmoidTopK;
}
bool is_softmax(ScoreFunc s) {
  return s == ScoreFunc::kSoftmax || s == ScoreFunc::kSoftmaxTopK;
}

}  // namespace

std::string_view score_func_name(ScoreFunc score) {
  for (const auto& n : kScoreFuncNames)
    if (n.score == score) return n.name;
  SY_ASSERT_MSG(false, "unknown ScoreFunc value");
  return {};
}

ScoreFunc parse_score_func(std::string_view name) {
  std::string valid;
  for (const auto& n : kScoreFuncNames) {
    if (n.name == name) return n.score;
    valid += valid.empty() ? "" : ", ";
    valid += n.name;
  }
  fail("unknown router score function '{}' (valid: {})", name, valid);
}

std::string RouterConfig::describe() const {
  const bool first = top_k_first(score);
  std::string s = first ? "logits" : std::string(score_func_name(score));
  if (has_selection_bias) s += " + selection bias";
  if (num_groups > 1)
    s += fmt::format(" -> top-{} of {} groups ({})", topk_groups, num_groups,
                     group_score == GroupScore::kMax ? "max" : "top-2 sum");
  const int k = expand_parts ? top_k / sub_experts : top_k;
  s += fmt::format(" -> top-{} of {}", k, num_logits());
  if (score == ScoreFunc::kSoftmaxTopK) s += " -> softmax over the selected";
  if (score == ScoreFunc::kSigmoidTopK) s += " -> sigmoid";
  if (renormalize) s += " -> renormalise";
  if (routed_scaling_factor != 1.0f) s += fmt::format(" -> x{}", routed_scaling_factor);
  if (expand_parts)
    s += fmt::format(" -> each to its {} parts (top-{} of {})", sub_experts, top_k, num_experts);
  else if (sub_experts > 1)
    s += fmt::format(" ({} parts per expert)", sub_experts);
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

// p[0..n) = softmax(x[0..n)), the sum in double (route()'s original arithmetic).
void softmax_row(const float* x, int n, float* p) {
  const float m = *std::max_element(x, x + n);
  double sum = 0;
  for (int e = 0; e < n; ++e) sum += (p[e] = std::exp(x[e] - m));
  const float inv = float(1.0 / sum);
  for (int e = 0; e < n; ++e) p[e] *= inv;
}

void sigmoid_row(const float* x, int n, float* p) {
  for (int e = 0; e < n; ++e) p[e] = 1.0f / (1.0f + std::exp(-x[e]));
}

}  // namespace

namespace {

// The partial transformation: route whole experts as the source model did, then send each
// selected expert's token to all of its parts with the expert's weight.
void route_expanded(const RouterConfig& cfg, const float* logits, int64_t num_tokens,
                    const float* selection_bias, int32_t* ids, float* weights, float* scores_out) {
  const int P = cfg.sub_experts;
  SY_ASSERT(P >= 1 && cfg.num_experts % P == 0 && cfg.top_k % P == 0);
  RouterConfig whole = cfg;
  whole.num_experts /= P;
  whole.top_k /= P;
  whole.sub_experts = 1;
  whole.expand_parts = false;
  const int E = whole.num_experts, K = whole.top_k;
  std::vector<int32_t> id(size_t(num_tokens * K));
  std::vector<float> w(id.size()), p(scores_out ? size_t(num_tokens * E) : 0);
  route(whole, logits, num_tokens, selection_bias, id.data(), w.data(),
        scores_out ? p.data() : nullptr);
  for (int64_t i = 0; i < num_tokens * K; ++i)
    for (int q = 0; q < P; ++q) {
      ids[i * P + q] = id[size_t(i)] * P + q;
      weights[i * P + q] = w[size_t(i)];
    }
  if (scores_out)
    for (int64_t i = 0; i < num_tokens * E; ++i) std::fill_n(scores_out + i * P, P, p[size_t(i)]);
}

}  // namespace

namespace {

// SparseMixer's inference path (transformers' sparsemixer with training off), one token.
void sparsemixer_row(const float* x, int E, float eps, int32_t* id, float* w, float* masked) {
  constexpr float kNegInf = -std::numeric_limits<float>::infinity();
  std::copy(x, x + E, masked);  // the candidates: all, then all but the first choice
  for (int k = 0; k < 2; ++k) {
    int best = 0;
    for (int e = 1; e < E; ++e)
      if (masked[e] > masked[best]) best = e;  // the first maximum, as torch.max on CPU
    const float top = masked[best];
    // Softmax over the candidates within the margin of the top (relative to |x| or the top).
    double sum = 0;
    for (int e = 0; e < E; ++e) {
      const float factor = std::max(std::abs(x[e]), top);
      if (masked[e] != kNegInf && !((top - x[e]) / factor > 2 * eps))
        sum += std::exp(double(masked[e]) - double(top));
    }
    id[k] = best;
    w[k] = float(1.0 / sum);  // the top's own exp(0) over the sum
    masked[best] = kNegInf;
  }
}

}  // namespace

void route(const RouterConfig& cfg, const float* logits, int64_t num_tokens,
           const float* selection_bias, int32_t* ids, float* weights, float* scores_out) {
  if (cfg.score == ScoreFunc::kSparseMixer) {
    SY_ASSERT_MSG(
        cfg.top_k == 2 && !cfg.has_selection_bias && cfg.num_groups == 1 && !cfg.expand_parts,
        "SparseMixer routes exactly 2 experts, without bias, groups or parts");
    const int E = cfg.num_experts;
    std::vector<float> masked(static_cast<size_t>(E));
    for (int64_t t = 0; t < num_tokens; ++t) {
      sparsemixer_row(logits + t * E, E, cfg.sparsemixer_eps, ids + t * 2, weights + t * 2,
                      masked.data());
      if (scores_out) softmax_row(logits + t * E, E, scores_out + t * E);
    }
    return;
  }
  if (cfg.expand_parts) {
    route_expanded(cfg, logits, num_tokens, selection_bias, ids, weights, scores_out);
    return;
  }
  const int E = cfg.num_experts, K = cfg.top_k;
  SY_ASSERT(E > 0 && K > 0 && K <= E);
  SY_ASSERT(cfg.num_groups >= 1 && E % cfg.num_groups == 0);
  SY_ASSERT(cfg.topk_groups >= 1 && cfg.topk_groups <= cfg.num_groups);
  SY_ASSERT(!cfg.has_selection_bias || selection_bias != nullptr);
  const bool first = top_k_first(cfg.score);
  const bool softmax = is_softmax(cfg.score);
  // Top-k-first modes mask with -inf, so the kept groups must hold at least k experts.
  SY_ASSERT(!first || cfg.num_groups == 1 || K <= cfg.topk_groups * (E / cfg.num_groups));
  // Score-first modes always need p (the weights come from it); top-k-first modes only for
  // the scores output.
  const bool need_p = !first || scores_out != nullptr;
  const float masked = first ? -std::numeric_limits<float>::infinity() : 0.0f;
  std::vector<float> p(static_cast<size_t>(E)), choice(static_cast<size_t>(E));
  std::vector<int32_t> scratch(static_cast<size_t>(E));
  std::vector<int32_t> group_ids(static_cast<size_t>(cfg.num_groups));
  std::vector<float> group_scores(static_cast<size_t>(cfg.num_groups));
  std::vector<float> selected(static_cast<size_t>(K));

  for (int64_t t = 0; t < num_tokens; ++t) {
    const float* x = logits + t * E;
    if (need_p) {
      if (softmax)
        softmax_row(x, E, p.data());
      else
        sigmoid_row(x, E, p.data());
    }
    if (scores_out) std::copy(p.begin(), p.end(), scores_out + t * E);
    const float* base = first ? x : p.data();
    for (int e = 0; e < E; ++e)
      choice[e] = base[e] + (cfg.has_selection_bias ? selection_bias[e] : 0);

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
      // Experts of unselected groups get 0.0 (score-first, as the reference implementations
      // mask) or -inf (top-k-first: logits have no floor).
      std::vector<bool> keep(size_t(cfg.num_groups), false);
      for (int i = 0; i < cfg.topk_groups; ++i) keep[group_ids[i]] = true;
      for (int e = 0; e < E; ++e)
        if (!keep[e / per_group]) choice[e] = masked;
    }

    int32_t* id = ids + t * K;
    float* w = weights + t * K;
    top_k_indices(choice.data(), E, K, id, scratch.data());
    switch (cfg.score) {
      case ScoreFunc::kSoftmax:
      case ScoreFunc::kSigmoid:
        for (int i = 0; i < K; ++i) w[i] = p[id[i]];
        break;
      case ScoreFunc::kSoftmaxTopK:
        for (int i = 0; i < K; ++i) selected[i] = x[id[i]];
        softmax_row(selected.data(), K, w);
        break;
      case ScoreFunc::kSigmoidTopK:
        for (int i = 0; i < K; ++i) selected[i] = x[id[i]];
        sigmoid_row(selected.data(), K, w);
        break;
      case ScoreFunc::kSparseMixer:  // routed above
        break;
    }
    if (cfg.renormalize) {
      double sum = 0;
      for (int i = 0; i < K; ++i) sum += w[i];
      const float denom = float(sum) + cfg.renormalize_epsilon;
      for (int i = 0; i < K; ++i) w[i] /= denom;
    }
    if (cfg.routed_scaling_factor != 1.0f)
      for (int i = 0; i < K; ++i) w[i] *= cfg.routed_scaling_factor;
  }
}

// --- Noisy top-k gating --------------------------------------------------------------------

namespace {

// Noise elements are SplitMix64 outputs (util/splitmix64.h), drawn by counter.
constexpr uint64_t kGolden = kSplitMixGolden;

// softplus(x) = log(1 + exp(x)), without overflow for large x or loss for very negative x.
float softplus(float x) {
  return x > 0 ? x + std::log1p(std::exp(-x)) : std::log1p(std::exp(x));
}

}  // namespace

float noisy_gating_normal(uint64_t seed, uint64_t stream, uint64_t index) {
  const uint64_t key = mix64(mix64(seed + kGolden) ^ mix64(stream + 0x632be59bd9b4e019ULL));
  const uint64_t a = mix64(key + (2 * index + 1) * kGolden);
  const uint64_t b = mix64(key + (2 * index + 2) * kGolden);
  // Box-Muller with u1 in (0, 1] (never log(0)) and u2 in [0, 1), 53-bit uniforms.
  const double u1 = (double(a >> 11) + 1.0) * 0x1.0p-53;
  const double u2 = double(b >> 11) * 0x1.0p-53;
  constexpr double kTwoPi = 6.283185307179586476925286766559;
  return float(std::sqrt(-2.0 * std::log(u1)) * std::cos(kTwoPi * u2));
}

void route_noisy(const RouterConfig& cfg, const float* logits, const float* noise_logits,
                 int64_t num_tokens, uint64_t seed, uint64_t stream, int32_t* ids, float* weights,
                 float* scores, float* noise_out) {
  const int E = cfg.num_logits();
  SY_ASSERT(E > 0);
  SY_ASSERT_MSG(!cfg.has_selection_bias, "route_noisy takes no selection bias");
  std::vector<float> h(size_t(num_tokens) * size_t(E));  // [T, E] noisy logits H
  for (int64_t t = 0; t < num_tokens; ++t) {
    for (int e = 0; e < E; ++e) {
      const int64_t i = t * E + e;
      const float noise =
          noisy_gating_normal(seed, stream, uint64_t(i)) * softplus(noise_logits[i]);
      if (noise_out) noise_out[i] = noise;
      h[size_t(i)] = logits[i] + noise;
    }
  }
  route(cfg, h.data(), num_tokens, nullptr, ids, weights, scores);
}

// --- Expert choice ---------------------------------------------------------------------------

int64_t expert_choice_capacity(double capacity_factor, int64_t num_tokens, int num_experts) {
  SY_ASSERT(num_experts > 0 && num_tokens >= 0);
  SY_ASSERT(std::isfinite(capacity_factor) && capacity_factor >= 0);
  const double q = capacity_factor * double(num_tokens) / double(num_experts);
  const double r = std::round(q);
  if (std::abs(q - r) <= 1e-9 * std::max(1.0, q)) return int64_t(r);
  return int64_t(std::ceil(q));
}

std::string describe_expert_choice(int num_experts, double capacity_factor) {
  return fmt::format(
      "softmax -> expert choice: each of {} experts takes its top-C tokens, "
      "C = ceil({} * T / {})",
      num_experts, capacity_factor, num_experts);
}

void route_expert_choice(const float* logits, int64_t num_tokens, int num_experts,
                         double capacity_factor, int32_t* ids, float* weights, float* scores) {
  const int E = num_experts;
  const int64_t T = num_tokens;
  if (T == 0) return;  // (an empty affinity matrix has no column to point into)
  const int64_t C = std::min(expert_choice_capacity(capacity_factor, T, E), T);
  std::vector<float> s(size_t(T) * size_t(E));  // [T, E] affinity
  for (int64_t t = 0; t < T; ++t) softmax_row(logits + t * E, E, s.data() + t * E);
  for (int64_t i = 0; i < T * E; ++i) {
    ids[i] = kDroppedExpert;
    weights[i] = 0.0f;
  }
  std::vector<int64_t> order(static_cast<size_t>(T));
  for (int e = 0; e < E; ++e) {
    std::iota(order.begin(), order.end(), int64_t{0});
    const float* col = s.data() + e;  // column e, stride E
    std::partial_sort(order.begin(), order.begin() + C, order.end(),
                      [col, E](int64_t a, int64_t b) {
                        const float va = col[a * E], vb = col[b * E];
                        return va > vb || (va == vb && a < b);
                      });
    for (int64_t i = 0; i < C; ++i) {
      const int64_t t = order[size_t(i)];
      ids[t * E + e] = e;
      weights[t * E + e] = col[t * E];
    }
  }
  if (scores) std::copy(s.begin(), s.end(), scores);
}

namespace {
using json = nlohmann::json;
}  // namespace

std::string router_config_json(const RouterConfig& r) {
  return json{{"num_experts", r.num_experts},
              {"top_k", r.top_k},
              {"score", std::string(score_func_name(r.score))},
              {"renormalize", r.renormalize},
              {"renormalize_epsilon", r.renormalize_epsilon},
              {"routed_scaling_factor", r.routed_scaling_factor},
              {"has_selection_bias", r.has_selection_bias},
              {"num_groups", r.num_groups},
              {"topk_groups", r.topk_groups},
              {"group_score", r.group_score == GroupScore::kMax ? "max" : "top2_sum"},
              {"sub_experts", r.sub_experts},
              {"expand_parts", r.expand_parts},
              {"sparsemixer_eps", r.sparsemixer_eps}}
      .dump();
}

RouterConfig parse_router_config_json(const std::string& text, const std::string& where) {
  const json j = parse_json_bounded(text, where + ": router");
  if (!j.is_object()) fail("{}: router is not a JSON object", where);
  RouterConfig r;
  try {
    for (auto& [key, v] : j.items()) {
      if (key == "num_experts")
        r.num_experts = v.get<int>();
      else if (key == "top_k")
        r.top_k = v.get<int>();
      else if (key == "score") {
        try {
          r.score = parse_score_func(v.get<std::string>());
        } catch (const Error& e) {
          fail("{}: router score: {}", where, e.what());
        }
      } else if (key == "renormalize")
        r.renormalize = v.get<bool>();
      else if (key == "renormalize_epsilon")
        r.renormalize_epsilon = v.get<float>();
      else if (key == "routed_scaling_factor")
        r.routed_scaling_factor = v.get<float>();
      else if (key == "has_selection_bias")
        r.has_selection_bias = v.get<bool>();
      else if (key == "num_groups")
        r.num_groups = v.get<int>();
      else if (key == "topk_groups")
        r.topk_groups = v.get<int>();
      else if (key == "group_score") {
        const std::string g = v.get<std::string>();
        if (g != "max" && g != "top2_sum")
          fail("{}: router group_score '{}' is neither max nor top2_sum", where, g);
        r.group_score = g == "max" ? GroupScore::kMax : GroupScore::kTop2Sum;
      } else if (key == "sub_experts")
        r.sub_experts = v.get<int>();
      else if (key == "expand_parts")
        r.expand_parts = v.get<bool>();
      else if (key == "sparsemixer_eps")
        r.sparsemixer_eps = v.get<float>();
      else {
        fail("{}: router has an unknown key '{}'", where, key);
      }
    }
  } catch (const json::exception& e) {
    fail("{}: router has a value of the wrong type ({})", where, e.what());
  }
  if (r.sub_experts < 1 || r.num_experts % r.sub_experts != 0 || r.top_k % r.sub_experts != 0)
    fail("{}: router sub_experts {} must be at least 1 and divide num_experts {} and top_k {}",
         where, r.sub_experts, r.num_experts, r.top_k);
  if (r.score == ScoreFunc::kSparseMixer &&
      (r.top_k != 2 || r.has_selection_bias || r.num_groups != 1 || r.sub_experts != 1))
    fail("{}: a sparsemixer router routes exactly 2 experts, without bias, groups or parts", where);
  return r;
}

}  // namespace sy::moe
