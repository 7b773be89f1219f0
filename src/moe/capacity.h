// Capacity policies (Capacity-Aware Inference, papers.md section 1): bound how many
// (token, expert) pairs each expert -- or each device -- receives from one device's tokens,
// so that the busiest expert no longer sets the pace of expert parallelism.
//
// A policy rewrites the router's top-k table. A dropped pair becomes kDroppedExpert, so
// dispatch and combine need no special case; expanded drop may add pairs (more slots).
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "moe/placement.h"
#include "moe/router.h"

namespace sy::moe {

enum class CapacityPolicy : uint8_t {
  kNone,          // dropless (default)
  kScore,         // token drop: an overflowing expert keeps its C highest-scoring pairs
  kOrder,         // token drop: keeps the C earliest tokens (Switch Transformer style)
  kReverseOrder,  // token drop: keeps the C latest tokens
  kRandom,        // token drop: keeps C tokens chosen at random (seeded)
  kExpanded,      // expanded drop (Algorithm 2): candidates = top-k + the source device's experts;
                  // each expert keeps its C best candidates by score, routed or not
  kReroute,       // v1 token reroute: overflowed pairs re-select among unfilled experts, in rounds
  kDevice,        // device-level: the pairs sent to a device are bounded, not each expert's
  kThreshold,     // DualSparse-MoE's 1T / 2T-Drop: no capacity; a pair whose expert's share
                  // of the token's routing weight is below a threshold is skipped (2T: between
                  // the two thresholds only the expert's major part runs)
};

// Command-line names: none, score, order, reverse, random, expanded, reroute, device, threshold.
std::string_view capacity_policy_name(CapacityPolicy policy);
CapacityPolicy parse_capacity_policy(std::string_view name);  // error lists the valid names

struct CapacityConfig {
  CapacityPolicy policy = CapacityPolicy::kNone;
  double factor = 1.5;            // gamma
  bool renormalize = false;       // rescale a token's surviving weights to sum to 1 (authors' code)
  bool skip_single_token = true;  // leave decode steps (every sequence one token) alone, as the
                                  // authors' code does (sequence_length == 1)
  int reroute_rounds = 3;         // kReroute: re-selection rounds before the final drop
  uint64_t seed = 0;              // kRandom
  // kThreshold: with s = the weight of a pair's expert / the sum of the token's weights,
  // s < drop_major skips the expert, drop_major <= s < drop_minor runs only its major part,
  // s >= drop_minor runs it whole (1T-Drop: drop_major == drop_minor). Applies to decode
  // steps too. With a partitioned model (RouterConfig::sub_experts = P), ids [e P, (e + 1) P)
  // are the parts of one expert, whose share is their sum; the first is the major part.
  double drop_major = 0.05, drop_minor = 0.05;
  // Load-aware thresholds under expert parallelism (DualSparse-MoE): a device whose experts
  // receive r times the balanced load uses the thresholds times min(1, r), so overloaded
  // devices drop as configured and light ones drop less.
  bool load_aware = false;

  bool active() const { return policy != CapacityPolicy::kNone; }
  std::string describe() const;  // e.g. "score drop, gamma 1.5 (C = ceil(gamma*T*k/E))"
};

// Every CapacityConfig setting, declared once: its routing-trace metadata key, its command-line
// flag with help, and how it reads and writes as text (with its own validation). The CLI and
// the trace writer / reader iterate this table instead of restating the fields.
struct CapacitySetting {
  const char* key;         // routing-trace metadata, e.g. "capacity_factor"
  const char* flag;        // command line, e.g. "--capacity-factor"
  const char* value_name;  // the flag's value in --help, e.g. "FLOAT" ("" for a switch)
  const char* help;
  std::string (*get)(const CapacityConfig&);
  // From text (metadata, or a flag's value); sy::Error naming `where` when invalid.
  void (*set)(CapacityConfig&, const std::string& value, const std::string& where);
  void (*on_switch)(CapacityConfig&);  // non-null: the flag takes no value and does this
};
std::span<const CapacitySetting> capacity_settings();

// C = ceil(gamma * T * k / E), the rounding of the authors' code (Algorithm 1 in the paper
// floors; ceil never sets C below the mean load). At least 1 when T > 0.
int64_t expert_capacity(double gamma, int64_t num_tokens, int top_k, int num_experts);

// Pair slots per token a policy may fill: top_k, or, for expanded drop, top_k plus the most
// experts any one device hosts (all experts when the placement is empty).
int capacity_slots(const CapacityConfig& config, int top_k, int num_experts,
                   const Placement& placement);

// What one call of the policy did, summed over calls (layers add it to LoadStats).
struct CapacityOutcome {
  std::vector<int64_t> load_before;  // [E] pairs the router sent each expert
  std::vector<int64_t> load_after;   // [E] pairs each expert keeps
  int64_t routed = 0;                // sum_i N_i (before the policy)
  int64_t overflow = 0;              // sum_i ReLU(N_i - C): DT = overflow / routed
  int64_t dropped = 0;               // router pairs removed
  int64_t added = 0;                 // pairs the policy added (expanded drop, reroute)
  int64_t rerouted = 0;              // of `added`, pairs moved from an overflowing expert

  void reset(int num_experts);
  void accumulate(const CapacityOutcome& other);
};

// Where one application of a policy sits in the run.
struct CapacityCall {
  // Mixed with config.seed: random drops draw anew for every layer, device and forward call,
  // and replay identically for the same (seed, stream).
  uint64_t rng_stream = 0;
  // The forward call is a decode step: every sequence in it holds one token (with
  // skip_single_token the policy leaves the table alone; a one-token device slice of a prefill
  // is not a decode step).
  bool decode_step = false;
  // kThreshold with load_aware: [E] factors on each expert's thresholds (its device's load over
  // the balanced load, at most 1), computed from the whole call's routing; null: 1.
  const float* threshold_scale = nullptr;
};

// Applies `config` to T tokens that all come from `source_device` (placement may be empty:
// one device holding every expert). Capacity is computed from T, i.e. per source device.
//   scores:  [T, E] router probabilities, the priority of a pair (softmax or sigmoid score)
//   ids, weights: [T, top_k] the router's choice; ids may already hold kDroppedExpert
//   out_ids, out_weights: [T, out_slots], out_slots >= capacity_slots(...); unused slots are
//     kDroppedExpert with weight 0. in and out may not alias.
// Weights: kept router pairs keep the router's weight; a pair a policy adds gets
// score * s_t, s_t = (sum of t's router weights) / (sum of their scores), the token's router
// normalisation (1 for raw-probability routers such as OLMoE's: the paper's raw scores).
// Ties in priority keep the earlier token. Adds this call's counts to `outcome`.
void apply_capacity(const CapacityConfig& config, const RouterConfig& router, const float* scores,
                    const int32_t* ids, const float* weights, int64_t num_tokens,
                    const Placement& placement, int source_device, const CapacityCall& call,
                    int32_t* out_ids, float* out_weights, int out_slots, CapacityOutcome& outcome);

}  // namespace sy::moe
