// Expert-load heatmaps: the layer x expert loads of a LoadStats (MoE layers only) drawn as a
// standalone SVG with each layer's balance (max/mean) and dropped-token fraction beside it.
#pragma once

#include <string>

#include <nlohmann/json.hpp>

#include "model/config.h"
#include "moe/load_stats.h"
#include "report/svg_heatmap.h"

namespace sy::cli {

// The heatmap of the loads before (`before_policy`) or after the capacity policy. `subtitle`
// (e.g. the model and policy) is appended to the title. Throws sy::Error when no MoE layer
// received tokens.
report::Heatmap load_heatmap(const moe::LoadStats& stats, bool before_policy,
                             const std::string& subtitle = "");

// Writes load_heatmap(...) to `path` atomically.
void write_load_heatmap(const moe::LoadStats& stats, const std::string& path, bool before_policy,
                        const std::string& subtitle = "");

// The share of expert computation the policy removed (DualSparse-MoE's drop rate), per MoE
// layer and in total: dropped pairs x expert width over (routed pairs x expert width + tokens x
// shared-expert width), tokens = routed pairs / top-k. {"total": x, "layers": [{layer, share}]}.
nlohmann::json expert_compute_dropped(const moe::LoadStats& stats,
                                      const model::ModelConfig& config);

}  // namespace sy::cli
