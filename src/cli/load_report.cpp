#include "cli/load_report.h"

#include <fmt/format.h>

#include <algorithm>

#include "util/error.h"

namespace sy::cli {
namespace {

// max/mean over devices of the pairs their experts hold (before or after the policy).
double device_max_over_mean(const moe::LoadStats& stats, int layer, bool before_policy) {
  const moe::Placement& p = stats.placement();
  int64_t max = 0, sum = 0;
  for (int d = 0; d < p.num_devices(); ++d) {
    int64_t load = 0;
    for (int32_t e : p.experts_on(d))
      load += before_policy ? stats.count_before(layer, e) : stats.count(layer, e);
    max = std::max(max, load);
    sum += load;
  }
  return sum == 0 ? 0.0 : double(max) * p.num_devices() / double(sum);
}

}  // namespace

report::Heatmap load_heatmap(const moe::LoadStats& stats, bool before_policy,
                             const std::string& subtitle) {
  report::Heatmap m;
  const int E = stats.num_experts();
  const bool devices = !stats.placement().empty() && stats.placement().num_devices() > 1;
  m.title = fmt::format("Expert load {} the capacity policy", before_policy ? "before" : "after");
  if (!subtitle.empty()) m.title += " - " + subtitle;
  m.num_cols = E;
  for (int e = 0; e < E; ++e) m.col_labels.push_back(fmt::format("e{}", e));
  for (int l = 0; l < stats.num_layers(); ++l) {
    if (!stats.layer_active(l)) continue;
    ++m.num_rows;
    m.row_labels.push_back(fmt::format("layer {}", l));
    for (int e = 0; e < E; ++e)
      m.values.push_back(double(before_policy ? stats.count_before(l, e) : stats.count(l, e)));
    std::string note =
        fmt::format("max/mean {:.2f}, DT {:.1f}%",
                    before_policy ? stats.max_over_mean_before(l) : stats.max_over_mean(l),
                    100.0 * stats.dropped_fraction(l));
    if (devices)
      note += fmt::format(", devices {:.2f}", device_max_over_mean(stats, l, before_policy));
    m.row_notes.push_back(note);
  }
  if (m.num_rows == 0)
    fail("expert-load heatmap: no MoE layer received tokens, so there is nothing to draw");
  m.notes_header = devices ? "balance: experts, devices (max/mean)" : "balance";
  m.value_caption = "(token, expert) pairs";
  const moe::CapacityOutcome t = stats.totals();
  m.footer = fmt::format("{} pairs routed, {} dropped, {} added; DT {:.1f}%", t.routed, t.dropped,
                         t.added, t.routed ? 100.0 * double(t.overflow) / double(t.routed) : 0.0);
  if (!stats.placement().empty()) m.footer += "; " + stats.placement().describe();
  return m;
}

nlohmann::json expert_compute_dropped(const moe::LoadStats& stats, const model::ModelConfig& c) {
  const double I = double(c.expert_intermediate_size), S = double(c.shared_intermediate_size);
  const double K = double(std::max(1, c.router.top_k));
  double dropped = 0, total = 0;
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < stats.num_layers(); ++l) {
    const moe::CapacityOutcome& o = stats.layer_totals(l);
    if (o.routed == 0) continue;
    const double d = double(o.dropped) * I, all = double(o.routed) * I + double(o.routed) / K * S;
    layers.push_back({{"layer", l}, {"share", all > 0 ? d / all : 0.0}});
    dropped += d, total += all;
  }
  return {{"total", total > 0 ? dropped / total : 0.0}, {"layers", layers}};
}

void write_load_heatmap(const moe::LoadStats& stats, const std::string& path, bool before_policy,
                        const std::string& subtitle) {
  report::write_heatmap_svg(path, load_heatmap(stats, before_policy, subtitle));
}

}  // namespace sy::cli
