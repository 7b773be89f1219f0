// What a generate / score run leaves behind about its routing: the expert-load table (always,
// on stderr), and on request the same as JSON (--load-json), heatmaps of the loads before and
// after the capacity policy (--load-heatmap), and the routing trace of every MoE layer call
// (--trace, replayable with `switchyard replay`).
#pragma once

#include <CLI/CLI.hpp>
#include <memory>
#include <string>

#include "model/model.h"
#include "moe/load_stats.h"
#include "moe/moe_layer.h"
#include "moe/routing_trace.h"

namespace sy::cli {

struct ReportOptions {
  std::string load_json, load_heatmap, trace;
};
void add_report_options(CLI::App& cmd, ReportOptions& options);
void check_report_paths(const ReportOptions& options);  // before any work is done

class RunReport {
 public:
  // Attaches a trace recorder to `runtime` when --trace was given. `rank` >= 0 under MPI:
  // each rank records its own tokens to TRACE.rankN, and only rank 0 writes the rest.
  RunReport(const ReportOptions& options, moe::MoeRuntime& runtime, int rank = -1);
  // Prints the load table and writes the requested files (stats already reduced over ranks).
  void finish(const moe::LoadStats& stats, const model::Model& model,
              const moe::MoeRuntime& runtime) const;

 private:
  ReportOptions options_;
  int rank_;
  std::unique_ptr<moe::RoutingTraceWriter> trace_;
};

}  // namespace sy::cli
