// The MoE block: router -> dispatch -> grouped expert FFN -> combine (+ shared expert) ->
// load statistics. One function that reads like the pipeline in DESIGN.md.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "moe/dispatch.h"
#include "moe/expert_ffn.h"
#include "moe/load_stats.h"
#include "moe/router.h"

namespace sy::moe {

struct MoeBlock {
  const RouterConfig* router = nullptr;
  const float* router_weight = nullptr;   // [E, H] float32
  const float* selection_bias = nullptr;  // [E] or nullptr
  std::span<const FfnWeights> experts;    // [E]
  const FfnWeights* shared = nullptr;     // optional shared expert(s), one wide FFN
  const float* shared_gate = nullptr;     // [H] or nullptr: out += sigmoid(gate . x) * shared(x)
};

struct MoeScratch {
  std::vector<float> logits;               // [T, E]
  std::vector<int32_t> ids;                // [T, k]
  std::vector<float> weights;              // [T, k]
  DispatchPlan plan;
  std::vector<float> permuted, expert_out;  // [rows, H]
  std::vector<float> shared_out;           // [T, H]
  FfnScratch ffn;
};

// x: [T, H] -> out: [T, H] (overwritten). Adds this call's per-expert loads to `stats`
// at `layer` when stats is non-null.
void moe_forward(const MoeBlock& block, const float* x, int64_t num_tokens, int64_t hidden,
                 float* out, MoeScratch& scratch, LoadStats* stats = nullptr, int layer = 0);

}  // namespace sy::moe
