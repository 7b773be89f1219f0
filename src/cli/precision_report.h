// ReaLB's command-line side: the flags of the per-rank precision policy, their checks against
// the model and the run (mpirun or --devices), and the report of what each rank chose.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "moe/precision_policy.h"

namespace sy::cli {

struct Engine;

struct PrecisionOptions {
  std::string policy = "bf16", format = "int8", modality_ids, json;
  int64_t batch_threshold = 2048;
  double hot_factor = 1.15, modality_threshold = 0.7;
  bool requested = false;  // --precision-policy given (bf16 included: then reported too)
};
void add_precision_options(CLI::App& cmd, PrecisionOptions& options);

// The policy the flags describe, checked against this CPU and the run: sy::Error when the
// format cannot run here at speed (naming the one that would), when realb has fewer than two
// devices (neither mpirun -np N nor --devices N), or when a flag needs a policy that is off.
moe::PrecisionPolicy precision_policy(const PrecisionOptions& options, int devices, bool offloaded);

// Rank 0 prints, per rank (device) and layer, how often it ran low and why, its experts' time
// and the conversion's (hidden behind the dispatch or not), and the step's slowest-rank MoE
// time; the JSON goes to options.json. Nothing without a policy.
void report_precision(const Engine& engine, const PrecisionOptions& options);

}  // namespace sy::cli
