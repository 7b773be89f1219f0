// Load statistics: the per-call straggler (busiest expert and device of each call, summed over
// calls) that the loads summed over calls hide, and the modelled EP latency built on it.
#include <gtest/gtest.h>

#include "moe/load_stats.h"

namespace sy::moe {
namespace {

CapacityOutcome call(std::vector<int64_t> before, std::vector<int64_t> after) {
  CapacityOutcome o;
  o.load_before = std::move(before);
  o.load_after = std::move(after);
  for (int64_t n : o.load_before) o.routed += n;
  return o;
}

TEST(LoadStats, PerCallStragglerIsNotTheSummedLoads) {
  // Two calls whose hot experts differ: summed over calls the 4 experts look balanced
  // (10, 10, 10, 10 -> max/mean 1.0), but each call waited for an expert with 8 pairs.
  LoadStats stats(1, 4);
  stats.record(0, call({8, 2, 5, 5}, {6, 2, 5, 5}));
  stats.record(0, call({2, 8, 5, 5}, {2, 6, 5, 5}));
  EXPECT_DOUBLE_EQ(stats.max_over_mean_before(0), 1.0);
  const LoadStats::CallStraggler& c = stats.call_straggler(0);
  EXPECT_EQ(c.calls, 2);
  EXPECT_EQ(c.max_expert_before, 16);  // 8 + 8
  EXPECT_EQ(c.max_expert_after, 12);   // 6 + 6
  EXPECT_DOUBLE_EQ(c.max_over_mean_before(4), 16.0 * 4 / 40);
  EXPECT_DOUBLE_EQ(c.max_over_mean_after(4), 12.0 * 4 / 36);
  // One device: the modelled latency is the busiest expert's.
  EXPECT_DOUBLE_EQ(c.modelled_speedup(false), 16.0 / 12.0);
}

TEST(LoadStats, ModelledLatencyFollowsTheBusiestDevice) {
  LoadStats stats(2, 4);
  stats.set_placement(Placement::contiguous(4, 2));   // d0: e0 e1, d1: e2 e3
  stats.record(1, call({8, 2, 5, 5}, {4, 2, 5, 5}));  // devices 10 | 10 -> 6 | 10
  stats.record(1, call({9, 3, 1, 1}, {5, 3, 1, 1}));  // devices 12 | 2 -> 8 | 2
  const LoadStats::CallStraggler c = stats.call_straggler_total();
  EXPECT_TRUE(stats.has_devices());
  EXPECT_EQ(c.max_device_before, 10 + 12);
  EXPECT_EQ(c.max_device_after, 10 + 8);
  EXPECT_DOUBLE_EQ(c.modelled_speedup(true), 22.0 / 18.0);
  const auto j = stats.straggler_json();
  EXPECT_EQ(j["modelled_latency_dropless"], 22);
  EXPECT_EQ(j["modelled_latency"], 18);
  EXPECT_EQ(j["moe_calls"], 2);
  // Under mpirun the rank-local maxima are dropped, not summed.
  stats.clear_call_straggler();
  EXPECT_EQ(stats.call_straggler_total().calls, 0);
}

}  // namespace
}  // namespace sy::moe
