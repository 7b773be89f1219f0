// Expert load per layer: how many (token, expert) pairs each expert received before and
// after the capacity policy, per device, and the straggler ratio max/mean that expert
// parallelism pays for (the busiest expert or device sets the pace), plus the dropped-token
// fraction DT = sum_i ReLU(N_i - C) / sum_i N_i of Capacity-Aware Inference.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "moe/capacity.h"
#include "moe/placement.h"

namespace sy::moe {

class LoadStats {
 public:
  LoadStats() = default;
  LoadStats(int num_layers, int num_experts);

  // Devices for the per-device columns; empty = one device.
  void set_placement(const Placement& placement) { placement_ = placement; }
  const Placement& placement() const { return placement_; }

  // Adds one call's outcome of the capacity policy (loads before / after, drops) at `layer`.
  void record(int layer, const CapacityOutcome& outcome);

  // Pairs kept by expert `expert` of `layer` (after the policy).
  int64_t count(int layer, int expert) const { return after_[index(layer, expert)]; }
  int64_t count_before(int layer, int expert) const { return before_[index(layer, expert)]; }
  int64_t device_count(int layer, int device) const;  // pairs kept on the device's experts

  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }
  bool layer_active(int layer) const;  // received any tokens (dense layers never do)
  // max/mean of the layer's expert loads after the policy; 1.0 is perfect balance, 0 when empty.
  double max_over_mean(int layer) const;
  double max_over_mean_before(int layer) const;
  double device_max_over_mean(int layer) const;  // over devices (kept pairs)
  // DT of the layer (0 when nothing was routed) and the totals over all layers.
  double dropped_fraction(int layer) const;
  const CapacityOutcome& layer_totals(int layer) const { return totals_[size_t(layer)]; }
  CapacityOutcome totals() const;
  bool any_policy_effect() const;  // some pair was dropped or added

  // The straggler per call, which the summed loads above hide (each call's busiest expert is
  // bounded by C, the sum over calls is not): over the calls of a layer (or all layers),
  // sum_calls max_i N_i before / after the policy, and sum_calls max_d (pairs on device d).
  // Modelled EP latency = the sum of the busiest device's pairs over calls (the busiest expert's
  // with one device): the paper's speed proxy, since an EP layer waits for its slowest device.
  // Valid in one process (with --devices); under mpirun each rank sees only its own tokens.
  struct CallStraggler {
    int64_t calls = 0;
    int64_t max_expert_before = 0, max_expert_after = 0;  // sum over calls
    int64_t max_device_before = 0, max_device_after = 0;  // sum over calls
    int64_t pairs_before = 0, pairs_after = 0;            // sum over calls
    // sum_calls max_i N_i / sum_calls mean_i N_i: 1.0 = every call perfectly balanced
    double max_over_mean_before(int num_experts) const;
    double max_over_mean_after(int num_experts) const;
    // Busiest device (or expert, with one device) summed over calls, dropless / with the policy.
    int64_t latency_before(bool devices) const {
      return devices ? max_device_before : max_expert_before;
    }
    int64_t latency_after(bool devices) const {
      return devices ? max_device_after : max_expert_after;
    }
    double modelled_speedup(bool devices) const;
  };
  const CallStraggler& call_straggler(int layer) const { return calls_[size_t(layer)]; }
  CallStraggler call_straggler_total() const;  // summed over layers
  bool has_devices() const { return !placement_.empty() && placement_.num_devices() > 1; }
  nlohmann::json straggler_json() const;
  // Under mpirun after summing the ranks' counters: per-call maxima of rank-local slices do
  // not add up to the devices' loads, so they are dropped rather than shown wrong.
  void clear_call_straggler() { calls_.assign(calls_.size(), CallStraggler{}); }

  // Every counter as one flat vector, so ranks can sum their statistics (MPI_Allreduce).
  std::vector<int64_t> counters() const;
  void set_counters(const std::vector<int64_t>& counters);

  // A table: one row per MoE layer, one column per expert (or a compact summary when there
  // are more than `max_columns` experts), then max/mean, and DT / kept / dropped / added
  // columns when a policy changed anything; per-device loads when there are devices.
  std::string table(int max_columns = 16) const;
  nlohmann::json to_json() const;

 private:
  size_t index(int layer, int expert) const {
    return size_t(layer) * size_t(num_experts_) + size_t(expert);
  }
  int num_layers_ = 0;
  int num_experts_ = 0;
  Placement placement_;
  std::vector<int64_t> before_, after_;  // [layers, experts]
  std::vector<CapacityOutcome> totals_;  // [layers] (loads unused; counts summed)
  std::vector<CallStraggler> calls_;     // [layers]
};

}  // namespace sy::moe
