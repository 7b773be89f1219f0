#include "cli/run_report.h"

#include <fmt/format.h>

#include "cli/load_report.h"
#include "io/file_util.h"
#include "util/memory.h"

namespace sy::cli {

void add_report_options(CLI::App& cmd, ReportOptions& o) {
  const std::string group = "Reports";
  cmd.add_option("--load-json", o.load_json, "Write the expert-load summary as JSON to this file")
      ->group(group);
  cmd.add_option("--load-heatmap", o.load_heatmap,
                 "Draw the layer x expert loads as an SVG heatmap (FILE.svg; with a capacity "
                 "policy also FILE.before.svg, the loads the router asked for)")
      ->group(group);
  cmd.add_option("--trace", o.trace,
                 "Record every MoE layer call's routing (scores, top-k, after the policy) to a "
                 "safetensors file for `switchyard replay`")
      ->group(group);
}

void check_report_paths(const ReportOptions& o) {
  io::check_output_path(o.load_json, "--load-json");
  io::check_output_path(o.load_heatmap, "--load-heatmap");
  io::check_output_path(o.trace, "--trace");
}

RunReport::RunReport(const ReportOptions& o, moe::MoeRuntime& runtime, int rank)
    : options_(o), rank_(rank) {
  if (o.trace.empty()) return;
  trace_ = std::make_unique<moe::RoutingTraceWriter>();
  runtime.observer = trace_.get();
}

namespace {

std::string before_path(const std::string& path) {
  const size_t dot = path.rfind('.');
  const size_t slash = path.rfind('/');
  if (dot == std::string::npos || (slash != std::string::npos && dot < slash))
    return path + ".before.svg";
  return path.substr(0, dot) + ".before" + path.substr(dot);
}

}  // namespace

void RunReport::finish(const moe::LoadStats& stats, const model::Model& model,
                       const moe::MoeRuntime& runtime) const {
  if (trace_) {
    moe::RoutingTraceInfo info;
    info.model = model.dir();
    info.architecture = model.config().architecture;
    info.num_layers = int(model.config().num_layers);
    info.router = model.config().router;
    info.capacity = runtime.capacity;
    info.placement = runtime.placement.empty() ? "" : runtime.placement.describe();
    const std::string path =
        rank_ >= 0 ? fmt::format("{}.rank{}", options_.trace, rank_) : options_.trace;
    if (trace_->num_calls() > 0) {
      trace_->finish(path, info);
      fmt::print(stderr, "routing trace of {} calls written to {}\n", trace_->num_calls(), path);
    }
  }
  if (rank_ > 0) return;
  if (const moe::ExpertCache* cache = model.expert_cache()) {
    const moe::OffloadStats o = cache->stats();
    fmt::print(
        stderr,
        "\nOffloaded experts ({} of experts, cache {}{}, reads {}): {} requests, {:.1f}% "
        "hits; read {} in {:.3f} s ({:.2f} GB/s); compute waited {:.3f} s for reads; "
        "streamed ahead {} experts, {} of them evicted unused\n",
        format_bytes(cache->expert_bytes_total()), format_bytes(cache->budget_bytes()),
        cache->cap_gbps() > 0 ? fmt::format(", link EMULATED at {} Gbit/s", cache->cap_gbps()) : "",
        cache->read_mode(), o.requests,
        o.requests ? 100.0 * double(o.hits) / double(o.requests) : 0.0, format_bytes(o.bytes_read),
        o.read_s, o.read_s > 0 ? double(o.bytes_read) / o.read_s / 1e9 : 0.0, o.stall_s, o.streamed,
        o.streamed_unused);
  }
  fmt::print(stderr, "\nExpert load (tokens per expert, per MoE layer):\n{}", stats.table());
  const nlohmann::json compute = expert_compute_dropped(stats, model.config());
  if (runtime.capacity.active()) {
    std::string per_layer;
    for (const auto& l : compute["layers"])
      per_layer +=
          fmt::format(" {}:{:.1f}%", l["layer"].get<int>(), 100 * l["share"].get<double>());
    fmt::print(stderr,
               "expert computation skipped: {:.1f}% (shared experts counted); per layer{}\n",
               100 * compute["total"].get<double>(), per_layer);
  }
  if (!options_.load_json.empty()) {
    nlohmann::json j = stats.to_json();
    j["expert_compute_dropped"] = compute;
    io::write_text_file_atomic(options_.load_json, j.dump(2) + "\n");
  }
  if (!options_.load_heatmap.empty() && stats.num_experts() > 0) {
    const std::string subtitle =
        runtime.capacity.active() ? runtime.capacity.describe() : std::string("dropless");
    write_load_heatmap(stats, options_.load_heatmap, false, subtitle);
    if (stats.any_policy_effect())
      write_load_heatmap(stats, before_path(options_.load_heatmap), true, subtitle);
    fmt::print(stderr, "load heatmap written to {}\n", options_.load_heatmap);
  }
}

}  // namespace sy::cli
