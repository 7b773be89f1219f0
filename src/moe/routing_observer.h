// A hook that sees every MoE layer call's routing before and after the capacity policy:
// the routing-trace writer and tests implement it. Pointers are valid during the call only.
#pragma once

#include <cstdint>

namespace sy::moe {

struct RoutingRecord {
  int layer = 0;
  int64_t num_tokens = 0;
  int num_experts = 0;
  int top_k = 0;
  int slots = 0;                          // pairs per token after the policy (>= top_k)
  const float* scores = nullptr;          // [T, E] router probabilities
  const int32_t* router_ids = nullptr;    // [T, top_k] the router's choice
  const float* router_weights = nullptr;  // [T, top_k]
  const int32_t* ids = nullptr;           // [T, slots] after the policy; kDroppedExpert = dropped
  const float* weights = nullptr;         // [T, slots]
  const float* x = nullptr;               // [T, hidden] the routed experts' input
  int64_t hidden = 0;
};

class RoutingObserver {
 public:
  virtual ~RoutingObserver() = default;
  virtual void observe(const RoutingRecord& record) = 0;
};

}  // namespace sy::moe
