// The MoE block: router -> dispatch -> grouped expert FFN -> combine (+ shared expert) ->
// load statistics. One function that reads like the pipeline in DESIGN.md (moe_forward), and
// the same pipeline as steps (routed_start .. combine_branches) for callers that run other
// operators while the routed branch's exchanges are in flight (ScMoE, model/layers.cpp).
#pragma once

#include <cstdint>
#include <functional>
#include <span>
#include <vector>

#include "moe/capacity.h"
#include "moe/dispatch.h"
#include "moe/expert_backend.h"
#include "moe/expert_cache.h"
#include "moe/expert_ffn.h"
#include "moe/load_stats.h"
#include "moe/low_precision_experts.h"
#include "moe/placement.h"
#include "moe/precision_policy.h"
#include "moe/router.h"
#include "moe/routing_observer.h"

namespace sy::moe {

struct MoeBlock {
  const RouterConfig* router = nullptr;
  const float* router_weight = nullptr;   // [E, H] float32
  const float* selection_bias = nullptr;  // [E] or nullptr
  const float* router_bias = nullptr;     // [E] or nullptr: added to the logits (GPT-OSS)
  const float* noise_weight = nullptr;    // [E, H] noisy top-k gating's W_noise, or nullptr
  std::span<const FfnWeights> experts;    // [E]
  const FfnWeights* shared = nullptr;     // optional shared expert(s), one wide FFN
  const float* shared_gate = nullptr;     // [H] or nullptr: out += sigmoid(gate . x) * shared(x)
  const float* combine_gate = nullptr;    // [2, H] or nullptr: ScMoE CG-2,
                                          // [alpha, beta] = softmax(C x) weigh shared, routed
  // Offloaded experts: `experts` hold shapes only and the weights come from this cache.
  ExpertCache* offload = nullptr;
  bool scale_inputs = false;  // Llama 4: experts run on w x and their outputs add unweighted
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
  // Under mpirun: sums [E] counts over the ranks (load-aware thresholds need every rank's
  // routing); null in one process.
  std::function<void(std::vector<int64_t>&)> sum_counts;
  // Where the routed experts run among the operators computed while their exchanges are in
  // flight (model/overlap_schedule.h): -1 adaptive, K >= 0 a fixed slot (clamped to the window).
  int expert_slot = -1;
  // The forward call being run, set by Model::forward before its layers (the runtime is shared
  // and const there): capacity policies leave decode steps alone (every sequence one token), and
  // calls are counted so that random drops draw anew in every call, replayably.
  mutable uint64_t forward_calls = 0;
  mutable bool decode_step = false;
  // ReaLB: the precision each device (rank) runs its routed experts in, per layer and call
  // (precision_policy.h). Tokens are tagged by `modality` (token_tags: set by Model::forward
  // from the call's token ids). Every device's choice and its cost go to precision_log.
  PrecisionPolicy precision;
  ModalityRule modality;
  mutable std::vector<uint8_t> token_tags;  // [T] of the call being run; empty: no tags
  std::vector<PrecisionRecord>* precision_log = nullptr;
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
  std::vector<float> routed_in;             // [T, H] a shortcut's normalised input (ScMoE)
  std::vector<float> routed_out;            // [T, H] the routed branch: sum w * expert(x)
  std::vector<float> shared_out;            // [T, H]
  std::vector<float> shared_gate;           // [T] sigmoid(gate . x) / CG-2's alpha; 1 without
  std::vector<float> routed_gate;           // [T] CG-2's beta; empty: 1
  FfnScratch ffn;                           // the routed experts run here in turn
  FfnScratch shared_ffn;                    // the shared expert's (keep = true records it)
  LowPrecisionExperts low;                  // ReaLB: this call's experts converted
  RoutedPairs pairs;                        // the call between routed_start and routed_finish
};

// Applies runtime.capacity to one call's routing of T tokens: per source-device slice (each
// device's contiguous share of the tokens) when the placement has devices and no
// source_device is set, else to all T as one device's tokens. Adds the counts to `outcome`.
//   scores [T, E], router_ids / router_weights [T, top_k] -> ids / weights [T, slots]
void apply_capacity_per_device(const MoeRuntime& runtime, const RouterConfig& router, int layer,
                               int64_t num_tokens, const float* scores, const int32_t* router_ids,
                               const float* router_weights, int slots, int32_t* ids, float* weights,
                               CapacityOutcome& outcome);

// The routed branch in three steps, for one MoE layer call (see expert_backend.h):
//   routed_start    router, capacity policy, statistics; the pairs go to the backend (or stay
//                   here); xr [T, H] must stay alive until routed_finish
//   routed_compute  the experts run (under expert parallelism: this rank's, once rows arrive)
//   routed_finish   scratch.routed_out [T, H] = sum over pairs of weight * expert(xr)
// routed_progress drives exchanges in flight between other operators.
void routed_start(const MoeBlock& block, const float* xr, int64_t num_tokens, int64_t hidden,
                  MoeScratch& scratch, const MoeRuntime& runtime, int layer);
void routed_progress(const MoeRuntime& runtime, int layer);
void routed_compute(const MoeBlock& block, MoeScratch& scratch, const MoeRuntime& runtime,
                    int layer);
void routed_finish(MoeScratch& scratch, const MoeRuntime& runtime, int layer);
// What the routed branch's exchanges are measured to take, and whether they block (then the
// experts run right after routed_start on every rank): the operator scheduler's inputs.
ExchangeEstimate routed_estimate(const MoeRuntime& runtime, int layer);
bool routed_blocking(const MoeRuntime& runtime);

// The shared expert on x [T, H] and the per-token branch gates (shared_gate, routed_gate).
void shared_forward(const MoeBlock& block, const float* x, int64_t num_tokens, int64_t hidden,
                    MoeScratch& scratch);
// out [T, H] = routed_gate * routed_out + shared_gate * shared_out (overwritten).
void combine_branches(const MoeBlock& block, int64_t num_tokens, int64_t hidden,
                      const MoeScratch& scratch, float* out);

// x: [T, H] -> out: [T, H] (overwritten). With a placement, the T tokens are split into one
// contiguous slice per device and the capacity policy applies to each slice separately (the
// paper's "before the all-to-all, on the local tokens"). Adds loads to runtime.stats.
void moe_forward(const MoeBlock& block, const float* x, int64_t num_tokens, int64_t hidden,
                 float* out, MoeScratch& scratch, const MoeRuntime& runtime = MoeRuntime{},
                 int layer = 0);

}  // namespace sy::moe
