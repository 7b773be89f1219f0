// The MoE block: router -> dispatch -> grouped expert FFN -> combine (+ shared expert) ->
// load statistics. One function that reads like the pipeline in DESIGN.md.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/capacity.h"
#include "moe/dispatch.h"
#include "moe/expert_backend.h"
#include "moe/expert_ffn.h"
#include "moe/load_stats.h"
#include "moe/placement.h"
#include "moe/router.h"
#include "moe/routing_observer.h"

namespace sy::moe {

struct MoeBlock {
  const RouterConfig* router = nullptr;
  const float* router_weight = nullptr;   // [E, H] float32
  const float* selection_bias = nullptr;  // [E] or nullptr
  const float* noise_weight = nullptr;    // [E, H] noisy top-k gating's W_noise, or nullptr
  std::span<const FfnWeights> experts;    // [E]
  const FfnWeights* shared = nullptr;     // optional shared expert(s), one wide FFN
  const float* shared_gate = nullptr;     // [H] or nullptr: out += sigmoid(gate . x) * shared(x)
};

// Per-run settings shared by every MoE layer: the capacity policy and where experts live,
// plus optional sinks for statistics and routing traces.
struct MoeRuntime {
  CapacityConfig capacity;  // default: dropless
  Placement placement;      // empty: one device
  int source_device = -1;   // this process's device under expert parallelism; -1: the
                            // tokens of a call are split into one slice per device
  LoadStats* stats = nullptr;
  RoutingObserver* observer = nullptr;
  ExpertBackend* backend = nullptr;  // null: every expert runs in this process
  // Without a backend: who runs the rows grouped by expert (null: each expert in turn here;
  // training passes its own, which records the experts' activations or owns them by rank).
  GroupedExperts* experts = nullptr;
  // Noisy top-k gating (training steps): with block.noise_weight set and noise_step >= 0 the
  // router selects on logits + eps * softplus(x W_noise^T), eps drawn from (noise_seed,
  // stream noise_step * noise_layers + layer): new noise every step and layer.
  uint64_t noise_seed = 0;
  int64_t noise_step = -1;
  int64_t noise_layers = 1;
  // The forward call being run, set by Model::forward before its layers (the runtime is shared
  // and const there): capacity policies leave decode steps alone (every sequence one token), and
  // calls are counted so that random drops draw anew in every call, replayably.
  mutable uint64_t forward_calls = 0;
  mutable bool decode_step = false;
};

// Buffers of one MoE call. They are also its record: after moe_forward they hold everything a
// backward pass needs (training keeps one per layer; inference reuses one for all layers).
struct MoeScratch {
  std::vector<float> logits;               // [T, E]
  std::vector<float> scores;               // [T, E] router probabilities
  std::vector<float> noise_logits, noise;  // [T, E] x W_noise^T, eps * softplus (noisy gating)
  std::vector<float> noisy;                // [T, E] logits + noise (empty: clean routing)
  std::vector<int32_t> router_ids;         // [T, k]
  std::vector<float> router_weights;       // [T, k]
  std::vector<int32_t> ids;                // [T, slots] after the capacity policy
  std::vector<float> weights;              // [T, slots]
  CapacityOutcome outcome;
  DispatchPlan plan;
  std::vector<float> permuted, expert_out;  // [rows, H] grouped expert inputs and outputs
  std::vector<float> shared_out;            // [T, H]
  std::vector<float> shared_gate;           // [T] sigmoid(gate . x), 1 without a gate
  FfnScratch ffn;                           // the routed experts run here in turn
  FfnScratch shared_ffn;                    // the shared expert's (keep = true records it)
};

// Applies runtime.capacity to one call's routing of T tokens: per source-device slice (each
// device's contiguous share of the tokens) when the placement has devices and no
// source_device is set, else to all T as one device's tokens. Adds the counts to `outcome`.
//   scores [T, E], router_ids / router_weights [T, top_k] -> ids / weights [T, slots]
void apply_capacity_per_device(const MoeRuntime& runtime, const RouterConfig& router, int layer,
                               int64_t num_tokens, const float* scores, const int32_t* router_ids,
                               const float* router_weights, int slots, int32_t* ids, float* weights,
                               CapacityOutcome& outcome);

// x: [T, H] -> out: [T, H] (overwritten). With a placement, the T tokens are split into one
// contiguous slice per device and the capacity policy applies to each slice separately (the
// paper's "before the all-to-all, on the local tokens"). Adds loads to runtime.stats.
void moe_forward(const MoeBlock& block, const float* x, int64_t num_tokens, int64_t hidden,
                 float* out, MoeScratch& scratch, const MoeRuntime& runtime = MoeRuntime{},
                 int layer = 0);

}  // namespace sy::moe
