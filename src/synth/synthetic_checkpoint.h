// Writes random-weight MoE checkpoints in the exact Hugging Face layout of each supported
// family (config.json + safetensors + tokenizer.json), for tests, benchmarks and the demo.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "model/config.h"

namespace sy::synth {

struct SyntheticSpec {
  model::Family family = model::Family::kMixtral;
  int64_t vocab_size = 0;  // 0: the tokenizer's size (512 without a tokenizer)
  int64_t hidden_size = 64;
  int64_t num_layers = 2;
  int64_t num_heads = 4;
  int64_t num_kv_heads = 2;
  int64_t head_dim = 0;  // 0: hidden_size / num_heads
  int64_t num_experts = 8;
  int64_t top_k = 2;
  int64_t expert_ffn = 96;
  int64_t dense_ffn = 128;         // dense layers (dots1 leading layers, qwen mlp_only_layers)
  int64_t shared_ffn = 0;          // qwen2_moe shared expert width; dots1: n_shared x expert_ffn
  int64_t first_dense_layers = 0;  // dots1 first_k_dense_replace
  int64_t num_groups = 1, topk_groups = 1;  // dots1 group-limited routing
  float routed_scaling_factor = 1.0f;
  int norm_topk_prob = -1;  // -1: the family's usual value
  float clip_qkv = 0.0f;    // olmoe
  int64_t sparse_step = 0;  // scmoe: MoE every N-th layer (0: the family's 2)
  std::string scmoe_shortcut = "pos2", scmoe_combine = "cg1";  // scmoe (docs/scmoe.md)
  bool tie_embeddings = false;
  std::string dtype = "BF16";      // F32 | F16 | BF16
  bool fused_experts = false;      // transformers v5 layout: experts.gate_up_proj [E, 2I, H]
  int num_shards = 1;              // > 1 writes model.safetensors.index.json
  std::string tokenizer = "auto";  // auto | byte_level | sentencepiece | none
  uint64_t seed = 1;
};

// Creates `dir` (if needed) and writes the checkpoint. Returns the files written.
std::vector<std::string> write_synthetic_checkpoint(const SyntheticSpec& spec,
                                                    const std::string& dir);

// What write_synthetic_checkpoint would write, without writing or generating anything:
// config.json's text and every tensor's name and shape. The spec's tokenizer must be "none"
// and its vocab_size set (a tokenizer would decide both).
struct SyntheticLayout {
  std::string config_json;
  std::vector<std::pair<std::string, std::vector<int64_t>>> tensors;
};
SyntheticLayout synthetic_layout(const SyntheticSpec& spec);

// The shapes of ../shared/reference/machine.md (A: Mixtral-like, B: OLMoE-like).
SyntheticSpec reference_shape(const std::string& name);

}  // namespace sy::synth
