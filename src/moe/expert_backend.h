// Where the routed experts run. moe_forward routes and applies the capacity policy, then hands
// the surviving (token, expert) pairs to a backend: the local one computes every expert in this
// process; the expert-parallel one (parallel/) sends rows to the ranks that own the experts by
// all-to-all, and brings the results back. Both add weight * expert(x) into `out`.
#pragma once

#include <cstdint>

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

// The in-process backend: dispatch (permute), grouped expert FFN, combine.
void run_local_experts(const MoeBlock& block, const RoutedPairs& pairs, MoeScratch& scratch,
                       float* out);

}  // namespace sy::moe
