// Where the routed experts run. moe_forward routes and applies the capacity policy, then hands
// the surviving (token, expert) pairs to a backend: the local one computes every expert in this
// process; the expert-parallel one (parallel/) sends rows to the ranks that own the experts by
// all-to-all, and brings the results back. Both add weight * expert(x) into `out`.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/expert_ffn.h"

namespace sy::moe {

struct MoeBlock;
struct MoeScratch;

struct RoutedPairs {
  int layer = 0;
  int64_t num_tokens = 0;
  int64_t hidden = 0;
  int slots = 0;                   // pairs per token
  const float* x = nullptr;        // [T, H] normalised input
  const int32_t* ids = nullptr;    // [T, slots], kDroppedExpert = no pair
  const float* weights = nullptr;  // [T, slots]
  double route_seconds = 0;        // time moe_forward spent routing + applying the policy
};

class ExpertBackend {
 public:
  virtual ~ExpertBackend() = default;
  // out [T, H] += sum over pairs of weight * expert(x). Collective for distributed backends:
  // every rank calls it once per MoE layer call, even with zero tokens.
  virtual void run(const MoeBlock& block, const RoutedPairs& pairs, MoeScratch& scratch,
                   float* out) = 0;
};

// Runs the routed experts over rows grouped by expert: ye = expert_e(xe) on the rows
// [offsets[e], offsets[e + 1]) of each expert e.
class GroupedExperts {
 public:
  virtual ~GroupedExperts() = default;
  virtual void forward(const MoeBlock& block, int layer, const std::vector<int64_t>& offsets,
                       const float* xe, int64_t hidden, float* ye) = 0;
};

// The in-process backend: dispatch (permute), grouped expert FFN (by `experts`, or each expert
// in turn here when null), combine.
void run_local_experts(const MoeBlock& block, const RoutedPairs& pairs, MoeScratch& scratch,
                       float* out, GroupedExperts* experts = nullptr);

}  // namespace sy::moe
