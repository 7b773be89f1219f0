// The model as one command runs it: in this process alone, or as one rank of an
// expert-parallel job started by mpirun (each rank loads the dense weights and only its own
// experts, routes its own tokens, and exchanges rows with the experts' owners).
#pragma once

#include <memory>
#include <optional>

#include "cli/common.h"
#include "cli/precision_report.h"
#include "model/model.h"
#include "moe/load_stats.h"
#include "moe/moe_layer.h"
#include "parallel/communicator.h"
#include "parallel/expert_parallel.h"
#include "tokenizer/tokenizer.h"

namespace sy::cli {

// Expert-parallel settings (meaningful under mpirun only).
struct ParallelOptions {
  parallel::EpOptions ep;      // overlap and the emulated link
  int expert_slot = -1;        // operator slot of the routed experts (-1: adaptive)
  std::string ep_json;         // per-rank, per-layer timings as JSON
  PrecisionOptions precision;  // ReaLB
};
void add_parallel_options(CLI::App& cmd, ParallelOptions& options);

struct Engine {
  const parallel::Communicator* comm = nullptr;
  std::unique_ptr<model::Model> model;
  std::optional<Tokenizer> tokenizer;
  moe::MoeRuntime runtime;  // capacity policy, placement, stats sink, EP backend
  std::unique_ptr<parallel::ExpertParallelBackend> ep;
  moe::LoadStats stats;
  std::vector<moe::PrecisionRecord> precision_log;  // ReaLB in one process (--devices N)

  bool distributed() const { return comm->distributed(); }
  int rank() const { return comm->rank(); }
  bool is_root() const { return comm->is_root(); }
};

// The tokenizer of a model folder (tokenizer.json) or GGUF file (its tokenizer.huggingface.json
// or tokenizer.ggml.* vocabulary); nullopt when it has none, sy::Error when it is malformed.
std::optional<Tokenizer> load_tokenizer(const std::string& model_path);

// Loads the model (under mpirun: this rank's experts only, after checking that every rank
// sees the same model and that the placement fits the ranks) and builds the runtime.
std::unique_ptr<Engine> open_engine(const ModelOptions& model, const CapacityOptions& capacity,
                                    const ParallelOptions& parallel, bool need_tokenizer);

// Sums the expert-load statistics of all ranks (in place; a no-op in one process).
void reduce_load_stats(const Engine& engine, moe::LoadStats& stats);

// Rank 0 prints each rank's time per MoE layer (dispatch, expert compute, combine, waits),
// rows exchanged, expert memory held and resident memory; the JSON goes to `json_path`.
void report_expert_parallel(const Engine& engine, const std::string& json_path);

}  // namespace sy::cli
