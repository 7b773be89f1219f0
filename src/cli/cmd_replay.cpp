// switchyard replay: re-applies a capacity policy and placement to the router outputs of a
// routing trace (score / generate --trace) and reports the expert loads before and after,
// DT and per-device loads -- a policy or placement studied without running the model.
// Each recorded forward call is replayed as moe_forward runs it: the call's tokens split into
// one contiguous slice per device, capacity applied to each slice.
#include <fmt/core.h>

#include <algorithm>

#include "cli/commands.h"
#include "cli/common.h"
#include "cli/load_report.h"
#include "io/file_util.h"
#include "moe/capacity.h"
#include "moe/dispatch.h"
#include "moe/routing_trace.h"
#include "util/error.h"

namespace sy::cli {
namespace {

struct ReplayOptions {
  std::string trace;
  CapacityOptions capacity;
  std::string json_path, heatmap, heatmap_before;
  bool quiet = false;
};

// Final ids of every recorded call of one layer, re-derived from the router's choice.
// Call i of a layer was forward call i + 1 of the recording run (each forward runs every MoE
// layer once), so random drops replay the recorded draws. A trace does not record sequences:
// a one-token call counts as a decode step.
void replay_layer(const moe::RoutingTraceLayer& L, const moe::RouterConfig& router_in,
                  const moe::MoeRuntime& rt, moe::LoadStats& stats) {
  moe::RouterConfig router = router_in;
  router.num_experts = L.num_experts;
  router.top_k = L.top_k;
  const int E = L.num_experts, K = L.top_k;
  const int slots = moe::capacity_slots(rt.capacity, K, E, rt.placement);
  std::vector<int32_t> ids;
  std::vector<float> weights;
  moe::CapacityOutcome outcome;
  int64_t first = 0;  // first token of the call
  uint64_t call = 0;
  for (const int32_t T : L.call_tokens) {
    rt.forward_calls = ++call;
    rt.decode_step = T == 1;
    if (T == 0) continue;
    ids.assign(size_t(T) * size_t(slots), moe::kDroppedExpert);
    weights.assign(ids.size(), 0.0f);
    outcome.reset(E);
    const float* scores = L.scores.data() + first * E;
    const int32_t* router_ids = L.router_ids.data() + first * K;
    const float* router_weights = L.router_weights.data() + first * K;
    moe::apply_capacity_per_device(rt, router, L.layer, T, scores, router_ids, router_weights,
                                   slots, ids.data(), weights.data(), outcome);
    stats.record(L.layer, outcome);
    first += T;
  }
}

// Whether two configurations make the same decisions (fields a policy does not read ignored).
bool same_policy(const moe::CapacityConfig& a, const moe::CapacityConfig& b) {
  using moe::CapacityPolicy;
  if (a.policy != b.policy) return false;
  if (!a.active()) return true;
  return a.factor == b.factor && a.renormalize == b.renormalize &&
         a.skip_single_token == b.skip_single_token &&
         (a.policy != CapacityPolicy::kReroute || a.reroute_rounds == b.reroute_rounds) &&
         (a.policy != CapacityPolicy::kRandom || a.seed == b.seed);
}

// Loads of the recorded final ids (what the traced run kept), [layers, experts].
std::vector<int64_t> recorded_loads(const moe::RoutingTrace& trace, int num_layers, int E) {
  std::vector<int64_t> loads(size_t(num_layers) * size_t(E), 0);
  for (const auto& L : trace.layers)
    for (int32_t e : L.ids)
      if (e != moe::kDroppedExpert) ++loads[size_t(L.layer) * size_t(E) + size_t(e)];
  return loads;
}

// Per-device loads before -> after, one row per MoE layer.
std::string device_table(const moe::LoadStats& stats) {
  const moe::Placement& p = stats.placement();
  std::string out = fmt::format("{:>5}", "layer");
  for (int d = 0; d < p.num_devices(); ++d)
    out += fmt::format(" {:>15}", fmt::format("d{} before>after", d));
  out += "\n";
  for (int l = 0; l < stats.num_layers(); ++l) {
    if (!stats.layer_active(l)) continue;
    out += fmt::format("{:>5}", l);
    for (int d = 0; d < p.num_devices(); ++d) {
      int64_t before = 0;
      for (int32_t e : p.experts_on(d)) before += stats.count_before(l, e);
      out += fmt::format(" {:>15}", fmt::format("{}>{}", before, stats.device_count(l, d)));
    }
    out += "\n";
  }
  return out;
}

void run_replay(const ReplayOptions& o) {
  const moe::RoutingTrace trace = moe::read_routing_trace(o.trace);
  const int E = trace.layers.front().num_experts;
  for (const auto& L : trace.layers)
    if (L.num_experts != E)
      fail("'{}': layer {} has {} experts but layer {} has {}; replay needs one expert count",
           o.trace, L.layer, L.num_experts, trace.layers.front().layer, E);
  const moe::MoeRuntime rt = make_moe_runtime(o.capacity, E);
  const int num_layers = trace.num_layers();
  moe::LoadStats stats(num_layers, E);
  stats.set_placement(rt.placement);

  int64_t tokens = 0, calls = 0;
  for (const auto& L : trace.layers) {
    replay_layer(L, trace.info.router, rt, stats);
    tokens = std::max(tokens, L.num_tokens);
    calls = std::max(calls, int64_t(L.call_tokens.size()));
  }

  const std::string recorded_capacity =
      trace.metadata.count("capacity") ? trace.metadata.at("capacity") : "unknown";
  const std::string recorded_placement =
      trace.info.placement.empty() ? moe::Placement().describe() : trace.info.placement;
  const std::string placement = rt.placement.describe();
  fmt::print("trace {}: {} MoE layers of {}, {} tokens in {} forward calls, {} experts, top-{}\n",
             o.trace, trace.layers.size(), num_layers, tokens, calls, E, trace.info.router.top_k);
  if (!trace.info.model.empty() || !trace.info.architecture.empty())
    fmt::print("recorded from {} ({})\n", trace.info.model, trace.info.architecture);
  fmt::print("recorded with: {}; {}\n", recorded_capacity, recorded_placement);
  fmt::print("replayed with: {}; {}\n", rt.capacity.describe(), placement);

  // Replaying the recorded configuration must reproduce what the run kept.
  nlohmann::json matches = nullptr;
  if (same_policy(rt.capacity, trace.info.capacity) && placement == recorded_placement) {
    const std::vector<int64_t> recorded = recorded_loads(trace, num_layers, E);
    std::string mismatch;
    for (int l = 0; l < num_layers && mismatch.empty(); ++l)
      for (int e = 0; e < E && mismatch.empty(); ++e)
        if (recorded[size_t(l) * size_t(E) + size_t(e)] != stats.count(l, e))
          mismatch = fmt::format("layer {} expert {}: recorded {}, replayed {}", l, e,
                                 recorded[size_t(l) * size_t(E) + size_t(e)], stats.count(l, e));
    matches = mismatch.empty();
    if (mismatch.empty())
      fmt::print("the replay reproduces the recorded loads exactly\n");
    else
      fmt::print("warning: the replay differs from the recorded loads ({})\n", mismatch);
  }

  if (!o.quiet) {
    fmt::print("\nExpert load (pairs per expert, per MoE layer, after the policy):\n{}",
               stats.table());
    if (!rt.placement.empty() && rt.placement.num_devices() > 1)
      fmt::print("\nPairs per device, before > after the policy:\n{}", device_table(stats));
  } else {
    const moe::CapacityOutcome t = stats.totals();
    fmt::print("{} pairs routed, {} dropped, {} added; DT = {:.2f}%\n", t.routed, t.dropped,
               t.added, t.routed ? 100.0 * double(t.overflow) / double(t.routed) : 0.0);
  }

  const std::string subtitle = fmt::format("{}", rt.capacity.describe());
  if (!o.heatmap.empty()) write_load_heatmap(stats, o.heatmap, false, subtitle);
  if (!o.heatmap_before.empty()) write_load_heatmap(stats, o.heatmap_before, true, subtitle);
  if (!o.json_path.empty()) {
    nlohmann::json j = {{"trace", o.trace},
                        {"model", trace.info.model},
                        {"architecture", trace.info.architecture},
                        {"tokens", tokens},
                        {"calls", calls},
                        {"recorded_capacity", recorded_capacity},
                        {"recorded_placement", recorded_placement},
                        {"capacity", rt.capacity.describe()},
                        {"capacity_policy", moe::capacity_policy_name(rt.capacity.policy)},
                        {"capacity_factor", rt.capacity.factor},
                        {"placement", placement},
                        {"matches_recording", matches},
                        {"expert_load", stats.to_json()}};
    io::write_text_file_atomic(o.json_path, j.dump(2) + "\n");
  }
}

}  // namespace

void register_replay(CLI::App& app) {
  auto o = std::make_shared<ReplayOptions>();
  CLI::App* cmd = app.add_subcommand(
      "replay",
      "Re-apply a capacity policy / placement to a routing trace (score or generate --trace) "
      "and report expert loads, DT and per-device loads without running the model");
  cmd->add_option("--trace", o->trace, "Routing trace (.safetensors) written by --trace")
      ->required();
  add_capacity_options(*cmd, o->capacity);
  cmd->add_option("--json", o->json_path,
                  "Write the loads before/after, DT and per-device loads as JSON");
  cmd->add_option("--heatmap", o->heatmap,
                  "Write a layer x expert heatmap of the loads after the policy (.svg)");
  cmd->add_option("--heatmap-before", o->heatmap_before,
                  "Write a layer x expert heatmap of the loads before the policy (.svg)");
  cmd->add_flag("-q,--quiet", o->quiet, "Print only the summary lines");
  cmd->callback([o] {
    io::check_output_path(o->json_path, "--json");
    io::check_output_path(o->heatmap, "--heatmap");
    io::check_output_path(o->heatmap_before, "--heatmap-before");
    run_replay(*o);
  });
}

}  // namespace sy::cli
