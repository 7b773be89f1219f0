// Pieces shared by the commands: model + tokenizer loading, thread setup, the load summary.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "model/model.h"
#include "moe/load_stats.h"
#include "moe/moe_layer.h"
#include "synth/synthetic_checkpoint.h"
#include "tokenizer/tokenizer.h"

namespace sy::cli {

struct ModelOptions {
  std::string model_dir;
  int threads = 0;  // 0 = all cores
  // Offloaded experts (moe/expert_cache.h): 0 keeps them resident.
  double expert_cache_mb = 0;
  double offload_gbps = 0;
  bool no_stream_ahead = false;
};

// Adds --model, --threads and the expert-offloading flags to a subcommand.
void add_model_options(CLI::App& cmd, ModelOptions& options);

// Capacity policy and placement flags shared by generate, score and replay.
struct CapacityOptions {
  moe::CapacityConfig capacity;  // its flags come from moe::capacity_settings()
  int devices = 0;
  std::string placement_file;
};
void add_capacity_options(CLI::App& cmd, CapacityOptions& options);
// Validates the flags against the model's expert count and builds the MoE runtime.
// expert_parallel: under mpirun, where a placement may replicate experts ('+e').
moe::MoeRuntime make_moe_runtime(const CapacityOptions& options, int num_experts,
                                 bool expert_parallel = false);

// Adds --family (the names of model/family.h; an unknown name is a parse error) bound to
// `family`; `help_extra` is appended to the help text.
CLI::Option* add_family_option(CLI::App& cmd, model::Family& family, const std::string& help_extra);

// ScMoE's architecture flags for a fresh model (make-tiny, train): --scmoe-shortcut,
// --scmoe-combine, --sparse-step. After parsing, scmoe_defaults fills what the user left out
// with the family's usual shape: top-1 routing and a shared expert as wide as one expert.
struct ScMoeOptions {
  CLI::Option* top_k = nullptr;       // the command's --top-k and --shared-ffn, to see whether
  CLI::Option* shared_ffn = nullptr;  // they were given
};
void add_scmoe_options(CLI::App& cmd, synth::SyntheticSpec& spec);
void scmoe_defaults(const ScMoeOptions& given, synth::SyntheticSpec& spec);

// A CLI11 check: the value parses as a finite number (NonNegativeNumber lets "nan" through).
extern const CLI::Validator kFiniteNumber;

// Creates the output directory of --out (parents included): sy::Error naming `flag` when the
// path exists but is not a directory, or cannot be created (read-only, no permission).
void make_output_dir(const std::string& path, const std::string& flag);

// Parses "1,2,3" into token ids.
std::vector<int32_t> parse_ids(const std::string& text);

}  // namespace sy::cli
