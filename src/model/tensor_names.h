// Checkpoint tensor names of the supported families (Hugging Face layout), in one place for
// the loader (weights.cpp) and the trainer, which both bind tensors by these names.
#pragma once

#include <cstdint>
#include <string>

#include "model/config.h"

namespace sy::model {

struct FfnNames {
  std::string gate, up, down;  // full names of the three [.., ..] ".weight" tensors
};

std::string layer_prefix(int64_t layer);  // "model.layers.3."
// The MoE block of a layer: "model.layers.3.block_sparse_moe." (Mixtral) or "...mlp.".
std::string moe_prefix(const ModelConfig& config, int64_t layer);
FfnNames dense_ffn_names(const ModelConfig& config, int64_t layer);  // "...mlp." (most)
// Routed expert e, stored per expert (w1 / w3 / w2 for Mixtral, gate_proj / up_proj /
// down_proj otherwise).
FfnNames expert_names(const ModelConfig& config, int64_t layer, int64_t expert);
// The shared expert(s): "shared_expert." (Qwen2-MoE) or "shared_experts." (dots.llm1).
FfnNames shared_expert_names(const ModelConfig& config, int64_t layer);

}  // namespace sy::model
