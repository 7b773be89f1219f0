#include "moe/capacity.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>
#include <numeric>

#include "moe/dispatch.h"
#include "util/error.h"
#include "util/parse.h"
#include "util/splitmix64.h"

namespace sy::moe {

// Capacities are clamped here before the float-to-integer conversion (no pair count comes near).
constexpr double kMaxCapacity = 4.0e18;

namespace {

struct PolicyName {
  CapacityPolicy policy;
  std::string_view name;
  std::string_view description;
};
constexpr PolicyName kPolicies[] = {
    {CapacityPolicy::kNone, "none", "dropless"},
    {CapacityPolicy::kScore, "score", "token drop by score"},
    {CapacityPolicy::kOrder, "order", "token drop, later tokens first"},
    {CapacityPolicy::kReverseOrder, "reverse", "token drop, earlier tokens first"},
    {CapacityPolicy::kRandom, "random", "token drop at random"},
    {CapacityPolicy::kExpanded, "expanded", "expanded drop (top-k + local experts)"},
    {CapacityPolicy::kReroute, "reroute", "token reroute"},
    {CapacityPolicy::kDevice, "device", "device-level capacity, drop by score"},
    {CapacityPolicy::kThreshold, "threshold", "threshold drop (DualSparse 1T / 2T)"},
};

// A (token, slot) pair of the output table.
struct Pair {
  int32_t token;
  int32_t slot;
};

class PolicyRun {
 public:
  PolicyRun(const CapacityConfig& cfg, const float* scores, int64_t T, int E, int K, int32_t* ids,
            float* weights, int slots, uint64_t rng_stream)
      : cfg_(cfg),
        p_(scores),
        T_(T),
        E_(E),
        K_(K),
        ids_(ids),
        w_(weights),
        S_(slots),
        stream_(rng_stream) {}

  float score(int32_t t, int32_t e) const { return p_[int64_t(t) * E_ + e]; }
  int32_t& id(const Pair& q) { return ids_[int64_t(q.token) * S_ + q.slot]; }
  float& weight(const Pair& q) { return w_[int64_t(q.token) * S_ + q.slot]; }

  // Current pairs of every expert, in token order.
  std::vector<std::vector<Pair>> pairs_by_expert() {
    std::vector<std::vector<Pair>> by(static_cast<size_t>(E_));
    for (int32_t t = 0; t < T_; ++t)
      for (int32_t s = 0; s < S_; ++s)
        if (const int32_t e = ids_[int64_t(t) * S_ + s]; e != kDroppedExpert)
          by[size_t(e)].push_back({t, s});
    return by;
  }

  // Orders the pairs of expert e by the policy's priority, most important first.
  void rank(std::vector<Pair>& pairs, int32_t e, CapacityPolicy policy) const {
    auto by_score = [&](const Pair& a, const Pair& b) {
      const float sa = score(a.token, e), sb = score(b.token, e);
      return sa > sb || (sa == sb && a.token < b.token);
    };
    switch (policy) {
      case CapacityPolicy::kOrder:
        std::stable_sort(pairs.begin(), pairs.end(),
                         [](const Pair& a, const Pair& b) { return a.token < b.token; });
        break;
      case CapacityPolicy::kReverseOrder:
        std::stable_sort(pairs.begin(), pairs.end(),
                         [](const Pair& a, const Pair& b) { return a.token > b.token; });
        break;
      case CapacityPolicy::kRandom: {
        // A reproducible per-pair random priority that does not depend on visit order.
        const uint64_t base = splitmix64(cfg_.seed ^ splitmix64(stream_ ^ splitmix64(uint64_t(e))));
        std::stable_sort(pairs.begin(), pairs.end(), [&](const Pair& a, const Pair& b) {
          return splitmix64(base ^ uint64_t(a.token)) < splitmix64(base ^ uint64_t(b.token));
        });
        break;
      }
      default:
        std::stable_sort(pairs.begin(), pairs.end(), by_score);
    }
  }

  // Drops the pairs of each expert beyond its first C in the policy's order.
  void token_drop(int64_t C, CapacityPolicy policy) {
    auto by = pairs_by_expert();
    for (int32_t e = 0; e < E_; ++e) {
      auto& pairs = by[size_t(e)];
      if (int64_t(pairs.size()) <= C) continue;
      rank(pairs, e, policy);
      for (size_t i = size_t(C); i < pairs.size(); ++i)
        id(pairs[i]) = kDroppedExpert, weight(pairs[i]) = 0;
    }
  }

  // Algorithm 2: a token's candidates are its router pairs plus every expert local to the
  // source device; each expert keeps the C candidates with the highest score, routed or not
  // (masked_scores.topk(C, dim=0)). A local expert is a candidate for every token, so it keeps
  // the C best tokens of the slice (a routed pair can lose its place to a token that did not
  // route there); an expert elsewhere only has routed candidates: a plain score drop.
  void expanded_drop(int64_t C, const std::vector<int32_t>& local,
                     const std::vector<float>& scale) {
    auto by = pairs_by_expert();
    std::vector<bool> is_local(size_t(E_), false);
    for (int32_t e : local) is_local[size_t(e)] = true;
    std::vector<int32_t> next_slot(size_t(T_), K_);
    for (int32_t e = 0; e < E_; ++e) {
      auto& routed = by[size_t(e)];
      if (!is_local[size_t(e)]) {
        if (int64_t(routed.size()) <= C) continue;
        rank(routed, e, CapacityPolicy::kScore);
        for (size_t i = size_t(C); i < routed.size(); ++i)
          id(routed[i]) = kDroppedExpert, weight(routed[i]) = 0;
        continue;
      }
      // Every token is a candidate: its router slot when it routed here, else a new one.
      std::vector<int32_t> slot_of(static_cast<size_t>(T_), -1);
      for (const Pair& q : routed) slot_of[size_t(q.token)] = q.slot;
      std::vector<int32_t> tokens(static_cast<size_t>(T_));
      std::iota(tokens.begin(), tokens.end(), 0);
      const size_t keep = size_t(std::min<int64_t>(C, T_));
      std::partial_sort(tokens.begin(), tokens.begin() + keep, tokens.end(),
                        [&](int32_t a, int32_t b) {
                          const float sa = score(a, e), sb = score(b, e);
                          return sa > sb || (sa == sb && a < b);
                        });
      std::vector<bool> kept(static_cast<size_t>(T_), false);
      for (size_t i = 0; i < keep; ++i) kept[size_t(tokens[i])] = true;
      for (int32_t t = 0; t < T_; ++t) {
        const int32_t s = slot_of[size_t(t)];
        if (s >= 0 && !kept[size_t(t)]) {  // a routed pair outranked by C others
          id({t, s}) = kDroppedExpert, weight({t, s}) = 0;
        } else if (s < 0 && kept[size_t(t)]) {  // a local expert the token did not route to
          const Pair q{t, next_slot[size_t(t)]++};
          SY_ASSERT(q.slot < S_);
          id(q) = e;
          weight(q) = score(t, e) * scale[size_t(t)];
        }
      }
    }
  }

  // Overflowed pairs leave their expert (masked for that token) and take the token's best
  // expert it neither holds nor had masked; repeated for `rounds`, then a final score drop.
  void reroute(int64_t C, int rounds, const std::vector<float>& scale) {
    std::vector<bool> masked(size_t(T_) * size_t(E_), false);
    for (int round = 0; round < rounds; ++round) {
      auto by = pairs_by_expert();
      std::vector<Pair> overflowed;
      for (int32_t e = 0; e < E_; ++e) {
        auto& pairs = by[size_t(e)];
        if (int64_t(pairs.size()) <= C) continue;
        rank(pairs, e, CapacityPolicy::kScore);
        overflowed.insert(overflowed.end(), pairs.begin() + C, pairs.end());
      }
      if (overflowed.empty()) break;
      std::sort(overflowed.begin(), overflowed.end(), [](const Pair& a, const Pair& b) {
        return a.token < b.token || (a.token == b.token && a.slot < b.slot);
      });
      for (const Pair& q : overflowed) masked[size_t(q.token) * size_t(E_) + size_t(id(q))] = true;
      for (const Pair& q : overflowed) {
        const int32_t t = q.token;
        int32_t best = kDroppedExpert;
        for (int32_t e = 0; e < E_; ++e) {
          if (masked[size_t(t) * size_t(E_) + size_t(e)] || holds(t, e)) continue;
          if (best == kDroppedExpert || score(t, e) > score(t, best)) best = e;
        }
        id(q) = best;
        weight(q) = best == kDroppedExpert ? 0.0f : score(t, best) * scale[size_t(t)];
      }
    }
    token_drop(C, CapacityPolicy::kScore);
  }

  // The pairs sent to each device are bounded by C_d = ceil(gamma*T*k*n_d/E).
  void device_drop(const Placement& placement) {
    const int D = placement.empty() ? 1 : placement.num_devices();
    std::vector<std::vector<std::pair<Pair, int32_t>>> by(static_cast<size_t>(D));
    for (int32_t t = 0; t < T_; ++t)
      for (int32_t s = 0; s < S_; ++s)
        if (const int32_t e = ids_[int64_t(t) * S_ + s]; e != kDroppedExpert)
          by[size_t(placement.empty() ? 0 : placement.device_of(e))].push_back({{t, s}, e});
    for (int d = 0; d < D; ++d) {
      const int n_d = placement.empty() ? E_ : int(placement.experts_on(d).size());
      // ceil(gamma*T*k*n_d/E), evaluated in this order (as the paper writes it).
      const double c_d = std::ceil(cfg_.factor * double(T_) * K_ * n_d / E_);
      const int64_t C_d =
          std::max<int64_t>(1, c_d < kMaxCapacity ? int64_t(c_d) : int64_t(kMaxCapacity));
      auto& pairs = by[size_t(d)];
      if (int64_t(pairs.size()) <= C_d) continue;
      std::stable_sort(pairs.begin(), pairs.end(), [&](const auto& a, const auto& b) {
        const float sa = score(a.first.token, a.second), sb = score(b.first.token, b.second);
        if (sa != sb) return sa > sb;
        if (a.first.token != b.first.token) return a.first.token < b.first.token;
        return a.second < b.second;
      });
      for (size_t i = size_t(C_d); i < pairs.size(); ++i)
        id(pairs[i].first) = kDroppedExpert, weight(pairs[i].first) = 0;
    }
  }

 private:
  bool holds(int32_t t, int32_t e) const {
    for (int32_t s = 0; s < S_; ++s)
      if (ids_[int64_t(t) * S_ + s] == e) return true;
    return false;
  }

  const CapacityConfig& cfg_;
  const float* p_;
  int64_t T_;
  int E_, K_;
  int32_t* ids_;
  float* w_;
  int S_;
  uint64_t stream_;
};

}  // namespace

std::string_view capacity_policy_name(CapacityPolicy policy) {
  for (const auto& p : kPolicies)
    if (p.policy == policy) return p.name;
  return "?";
}

CapacityPolicy parse_capacity_policy(std::string_view name) {
  std::string valid;
  for (const auto& p : kPolicies) {
    if (p.name == name) return p.policy;
    valid += fmt::format("{}{}", valid.empty() ? "" : ", ", p.name);
  }
  fail("unknown capacity policy '{}' (valid: {})", name, valid);
}

std::string CapacityConfig::describe() const {
  std::string_view what = "?";
  for (const auto& p : kPolicies)
    if (p.policy == policy) what = p.description;
  if (!active()) return std::string(what);
  if (policy == CapacityPolicy::kThreshold)
    return (drop_major == drop_minor
                ? fmt::format("{}: 1T, skip experts below {} of the token's weight", what,
                              drop_major)
                : fmt::format("{}: 2T, skip below {}, major part only below {}", what, drop_major,
                              drop_minor)) +
           (load_aware ? ", load-aware (x min(1, device load / balanced load))" : "");
  std::string s =
      fmt::format("{}, gamma {} (C = ceil(gamma*T*k/E) per source device)", what, factor);
  if (policy == CapacityPolicy::kReroute) s += fmt::format(", {} rounds", reroute_rounds);
  if (policy == CapacityPolicy::kRandom) s += fmt::format(", seed {}", seed);
  if (renormalize) s += ", weights renormalised";
  if (!skip_single_token) s += ", also on single-token steps";
  return s;
}

int64_t expert_capacity(double gamma, int64_t num_tokens, int top_k, int num_experts) {
  if (num_tokens <= 0) return 0;
  // The clamp keeps a huge gamma (1e300) from overflowing the integer conversion (a capacity
  // of 2^62 drops nothing, as 1e300 means).
  const double c = std::ceil(gamma * double(num_tokens) * top_k / num_experts);
  return std::max<int64_t>(1, c < kMaxCapacity ? int64_t(c) : int64_t(kMaxCapacity));
}

int capacity_slots(const CapacityConfig& config, int top_k, int num_experts,
                   const Placement& placement) {
  if (config.policy != CapacityPolicy::kExpanded) return top_k;
  if (placement.empty()) return top_k + num_experts;
  size_t most = 0;
  for (int d = 0; d < placement.num_devices(); ++d)
    most = std::max(most, placement.experts_on(d).size());
  return top_k + int(most);
}

void CapacityOutcome::reset(int num_experts) {
  *this = CapacityOutcome{};
  load_before.assign(size_t(num_experts), 0);
  load_after.assign(size_t(num_experts), 0);
}

void CapacityOutcome::accumulate(const CapacityOutcome& o) {
  if (load_before.size() < o.load_before.size()) load_before.resize(o.load_before.size(), 0);
  if (load_after.size() < o.load_after.size()) load_after.resize(o.load_after.size(), 0);
  for (size_t e = 0; e < o.load_before.size(); ++e) load_before[e] += o.load_before[e];
  for (size_t e = 0; e < o.load_after.size(); ++e) load_after[e] += o.load_after[e];
  routed += o.routed;
  overflow += o.overflow;
  dropped += o.dropped;
  added += o.added;
  rerouted += o.rerouted;
}

namespace {

// DualSparse-MoE's 1T / 2T-Drop on the output table (a copy of the router's): each pair's
// original expert (ids e P .. e P + P - 1 are one expert's parts) gets its share of the
// token's weight; below drop_major all its parts go, below drop_minor all but the first.
// scale: [E] factors on the thresholds (load-aware), or null.
void threshold_drop(const CapacityConfig& cfg, int P, int64_t T, int32_t* ids, float* weights,
                    int slots, const float* scale) {
  P = std::max(1, P);
  for (int64_t t = 0; t < T; ++t) {
    int32_t* id = ids + t * slots;
    float* w = weights + t * slots;
    double total = 0;
    for (int s = 0; s < slots; ++s)
      if (id[s] != kDroppedExpert) total += w[s];
    if (!(total > 0)) continue;
    std::vector<std::pair<int32_t, double>> share;  // original expert -> its weight
    for (int s = 0; s < slots; ++s) {
      if (id[s] == kDroppedExpert) continue;
      const int32_t g = id[s] / P;
      auto it =
          std::find_if(share.begin(), share.end(), [&](const auto& x) { return x.first == g; });
      if (it == share.end())
        share.emplace_back(g, w[s]);
      else
        it->second += w[s];
    }
    for (int s = 0; s < slots; ++s) {
      if (id[s] == kDroppedExpert) continue;
      const int32_t g = id[s] / P;
      const double x =
          std::find_if(share.begin(), share.end(), [&](const auto& y) { return y.first == g; })
              ->second /
          total;
      const bool major = id[s] % P == 0;
      const double f = scale ? scale[id[s]] : 1.0;
      if (x < f * cfg.drop_major || (x < f * cfg.drop_minor && !major)) {
        id[s] = kDroppedExpert;
        w[s] = 0.0f;
      }
    }
  }
}

}  // namespace

void apply_capacity(const CapacityConfig& cfg, const RouterConfig& router, const float* scores,
                    const int32_t* ids, const float* weights, int64_t T, const Placement& placement,
                    int source_device, const CapacityCall& call, int32_t* out_ids,
                    float* out_weights, int out_slots, CapacityOutcome& outcome) {
  const int E = router.num_experts, K = router.top_k;
  SY_ASSERT(out_slots >= capacity_slots(cfg, K, E, placement));
  SY_ASSERT(placement.empty() || (placement.num_experts() == E && source_device >= 0 &&
                                  source_device < placement.num_devices()));
  if (outcome.load_before.size() != size_t(E)) {
    outcome.load_before.resize(size_t(E), 0);
    outcome.load_after.resize(size_t(E), 0);
  }

  // Start from the router's table, padded with empty slots.
  std::vector<int64_t> before(size_t(E), 0);
  for (int64_t t = 0; t < T; ++t) {
    for (int s = 0; s < out_slots; ++s) {
      const bool routed = s < K;
      const int32_t e = routed ? ids[t * K + s] : kDroppedExpert;
      out_ids[t * out_slots + s] = e;
      out_weights[t * out_slots + s] = e == kDroppedExpert ? 0.0f : weights[t * K + s];
      if (e != kDroppedExpert) ++before[size_t(e)];
    }
  }
  const int64_t C = expert_capacity(cfg.factor, T, K, E);
  for (int e = 0; e < E; ++e) {
    outcome.load_before[size_t(e)] += before[size_t(e)];
    outcome.routed += before[size_t(e)];
    outcome.overflow += std::max<int64_t>(0, before[size_t(e)] - C);
  }

  const bool skip = !cfg.active() || (cfg.skip_single_token && call.decode_step &&
                                      cfg.policy != CapacityPolicy::kThreshold);
  if (!skip) {
    // Per-token factor mapping a probability to a combine weight (renormalisation, scaling),
    // so pairs a policy adds are weighted as the router would have weighted them.
    std::vector<float> scale(size_t(T), 0.0f);
    for (int64_t t = 0; t < T; ++t) {
      double w = 0, p = 0;
      for (int s = 0; s < K; ++s)
        if (const int32_t e = ids[t * K + s]; e != kDroppedExpert)
          w += weights[t * K + s], p += scores[t * E + e];
      scale[size_t(t)] = p > 0 ? float(w / p) : 0.0f;
    }
    PolicyRun run(cfg, scores, T, E, K, out_ids, out_weights, out_slots, call.rng_stream);
    switch (cfg.policy) {
      case CapacityPolicy::kScore:
      case CapacityPolicy::kOrder:
      case CapacityPolicy::kReverseOrder:
      case CapacityPolicy::kRandom:
        run.token_drop(C, cfg.policy);
        break;
      case CapacityPolicy::kExpanded: {
        std::vector<int32_t> local(static_cast<size_t>(E));
        std::iota(local.begin(), local.end(), 0);
        if (!placement.empty()) local = placement.experts_on(source_device);
        run.expanded_drop(C, local, scale);
        break;
      }
      case CapacityPolicy::kReroute:
        run.reroute(C, cfg.reroute_rounds, scale);
        break;
      case CapacityPolicy::kDevice:
        run.device_drop(placement);
        break;
      case CapacityPolicy::kThreshold:
        threshold_drop(cfg, router.sub_experts, T, out_ids, out_weights, out_slots,
                       call.threshold_scale);
        break;
      case CapacityPolicy::kNone:
        break;
    }
  }

  // Count what changed, per token: router pairs lost and pairs gained; optionally renormalise
  // the survivors to sum 1 (the authors' renormalize_after_capacity_drop).
  for (int64_t t = 0; t < T; ++t) {
    const int32_t* in = ids + t * K;
    int32_t* out = out_ids + t * out_slots;
    float* w = out_weights + t * out_slots;
    double sum_after = 0;
    for (int s = 0; s < K; ++s) {
      if (in[s] == kDroppedExpert) continue;
      if (std::find(out, out + out_slots, in[s]) == out + out_slots) ++outcome.dropped;
    }
    for (int s = 0; s < out_slots; ++s) {
      if (out[s] == kDroppedExpert) continue;
      ++outcome.load_after[size_t(out[s])];
      sum_after += w[s];
      if (std::find(in, in + K, out[s]) == in + K) {
        ++outcome.added;
        if (cfg.policy == CapacityPolicy::kReroute) ++outcome.rerouted;
      }
    }
    if (!skip && cfg.renormalize && sum_after > 0 && sum_after != 1.0) {
      const float f = float(1.0 / sum_after);
      for (int s = 0; s < out_slots; ++s) w[s] *= f;
    }
  }
}

namespace {

std::string bool_text(bool b) {
  return b ? "true" : "false";
}

constexpr CapacitySetting kCapacitySettings[] = {
    {"capacity_policy", "--capacity-policy", "POLICY",
     "none (dropless) | score | order | reverse | random (token drop: an expert over capacity "
     "keeps its C best pairs by gate score / earliest / latest / random tokens) | expanded "
     "(top-k plus the source device's experts, then score drop) | reroute (overflowed pairs "
     "re-select, in rounds) | device (bound each device's total load)",
     [](const CapacityConfig& c) { return std::string(capacity_policy_name(c.policy)); },
     [](CapacityConfig& c, const std::string& v, const std::string&) {
       c.policy = parse_capacity_policy(v);
     },
     nullptr},
    {"capacity_factor", "--capacity-factor", "FLOAT",
     "gamma: capacity C = ceil(gamma * tokens * top_k / experts) per expert, counted over one "
     "device's tokens of one forward call",
     [](const CapacityConfig& c) { return fmt::format("{}", c.factor); },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       const double f = parse_double(v, where);
       if (!(f > 0)) fail("{} must be a positive number (got {})", where, v);
       c.factor = f;
     },
     nullptr},
    {"capacity_renormalize", "--capacity-renormalize", "",
     "Rescale a token's surviving weights to sum to 1 after the policy (the authors' "
     "renormalize_after_capacity_drop)",
     [](const CapacityConfig& c) { return bool_text(c.renormalize); },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       c.renormalize = parse_bool(v, where);
     },
     [](CapacityConfig& c) { c.renormalize = true; }},
    {"capacity_skip_single_token", "--capacity-on-decode", "",
     "Apply the policy to decode steps too (every sequence of the call one token; default: "
     "skipped, as the authors' code does)",
     [](const CapacityConfig& c) { return bool_text(c.skip_single_token); },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       c.skip_single_token = parse_bool(v, where);
     },
     [](CapacityConfig& c) { c.skip_single_token = false; }},
    {"capacity_reroute_rounds", "--reroute-rounds", "INT",
     "Re-selection rounds of --capacity-policy reroute",
     [](const CapacityConfig& c) { return std::to_string(c.reroute_rounds); },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       const int64_t n = parse_int(v, where);
       if (n < 1 || n > 1000) fail("{} must be between 1 and 1000 (got {})", where, v);
       c.reroute_rounds = int(n);
     },
     nullptr},
    {"drop_threshold", "--drop-threshold", "T|TMAJOR,TMINOR",
     "--capacity-policy threshold (DualSparse-MoE): skip an expert whose share of the token's "
     "routing weight is below T (1T-Drop); with two thresholds, run only its major part between "
     "them (2T-Drop; needs experts partitioned with --importance)",
     [](const CapacityConfig& c) {
       return c.drop_major == c.drop_minor ? fmt::format("{}", c.drop_major)
                                           : fmt::format("{},{}", c.drop_major, c.drop_minor);
     },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       const size_t comma = v.find(',');
       const double a = parse_double(v.substr(0, comma), where);
       const double b = comma == std::string::npos ? a : parse_double(v.substr(comma + 1), where);
       if (!(a >= 0 && a <= 1 && b >= 0 && b <= 1))
         fail("{}: thresholds must be in [0, 1] (got {})", where, v);
       if (a > b)
         fail("{}: thresholds out of order: T_major {} > T_minor {} (give TMAJOR,TMINOR)", where, a,
              b);
       c.drop_major = a, c.drop_minor = b;
     },
     nullptr},
    {"drop_load_aware", "--drop-load-aware", "",
     "With --capacity-policy threshold and several devices: scale each device's thresholds by "
     "min(1, its load / the balanced load), so light devices drop less",
     [](const CapacityConfig& c) { return bool_text(c.load_aware); },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       c.load_aware = parse_bool(v, where);
     },
     [](CapacityConfig& c) { c.load_aware = true; }},
    {"capacity_seed", "--capacity-seed", "UINT", "Seed of --capacity-policy random",
     [](const CapacityConfig& c) { return std::to_string(c.seed); },
     [](CapacityConfig& c, const std::string& v, const std::string& where) {
       c.seed = uint64_t(parse_int(v, where));
     },
     nullptr},
};

}  // namespace

std::span<const CapacitySetting> capacity_settings() {
  return kCapacitySettings;
}

}  // namespace sy::moe
