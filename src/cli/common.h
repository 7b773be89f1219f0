// Pieces shared by the commands: model + tokenizer loading, thread setup, the load summary.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <string>

#include "model/model.h"
#include "moe/load_stats.h"
#include "tokenizer/tokenizer.h"

namespace sy::cli {

struct ModelOptions {
  std::string model_dir;
  int threads = 0;  // 0 = all cores
};

// Adds --model and --threads to a subcommand.
void add_model_options(CLI::App& cmd, ModelOptions& options);

// Applies the thread count and loads the model (and its tokenizer.json, if present).
struct LoadedModel {
  model::Model model;
  std::optional<Tokenizer> tokenizer;
};
LoadedModel load_model(const ModelOptions& options, bool need_tokenizer);

// The per-layer expert-load table, printed to stderr after a run, plus optional JSON file.
void report_expert_load(const moe::LoadStats& stats, const std::string& json_path);

// Parses "1,2,3" into token ids.
std::vector<int32_t> parse_ids(const std::string& text);

}  // namespace sy::cli
