// A loaded MoE causal language model and its forward pass over a batch of sequences.
// The model is immutable after loading; KV caches, workspaces and statistics belong to
// the caller, so several sequences (or threads) can share one model.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "model/config.h"
#include "model/kv_cache.h"
#include "model/layers.h"
#include "model/weights.h"
#include "moe/load_stats.h"
#include "moe/moe_layer.h"

namespace sy::model {

// Buffers reused across forward calls (no allocation once sizes settle).
struct Workspace {
  std::vector<float> x;                   // [T, H] the residual stream
  std::vector<float> rope_cos, rope_sin;  // [T, head_dim / 2]
  std::vector<float> last;                // [rows for the LM head, H]
  LayerScratch layers;
  PhaseTimes* times = nullptr;  // optional: wall time per phase of the layers (run_layers)
};
enum class LogitsFor { kLastToken, kAllTokens };

class Model {
 public:
  // owned_experts: the routed experts this process computes (expert parallelism); empty = all.
  Model(Model&& other) noexcept;
  Model& operator=(Model&& other) noexcept;
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  // offload: keep the routed experts in the files and read them through a bounded cache.
  static Model load(const std::string& model_dir, const ExpertMask& owned_experts = {},
                    const moe::OffloadConfig* offload = nullptr);

  const ModelConfig& config() const { return config_; }
  const ModelWeights& weights() const { return weights_; }
  const std::string& dir() const { return dir_; }

  // Runs the new tokens of every chunk through the model and appends them to the caches.
  // logits: [num_chunks, vocab] (kLastToken) or [total_tokens, vocab] (kAllTokens).
  // `runtime` carries the capacity policy, placement and the load-statistics / trace sinks.
  void forward(std::span<const SequenceChunk> chunks, LogitsFor which, float* logits, Workspace& ws,
               const moe::MoeRuntime& runtime) const;
  // Dropless; expert loads are added to `stats` when given.
  void forward(std::span<const SequenceChunk> chunks, LogitsFor which, float* logits, Workspace& ws,
               moe::LoadStats* stats = nullptr) const;

  moe::LoadStats new_load_stats() const;
  // The offloaded experts' cache, or null when the experts are resident.
  const moe::ExpertCache* expert_cache() const { return cache_.get(); }

 private:
  Model(std::string dir, ModelConfig config, ModelWeights weights);
  void bind_blocks();

  std::string dir_;
  ModelConfig config_;
  ModelWeights weights_;
  std::vector<LayerView> layers_;  // per layer, views into weights_
  std::unique_ptr<moe::ExpertCache> cache_;
};

}  // namespace sy::model
