// The supported model families, each declared once (model/families/<name>.cpp): its short name
// (make-tiny / train --family, config.json model_type), its Hugging Face architecture, its
// tensor names, and its config.json keys both ways. The config reader, the loader, the
// trainer's binder and synthetic checkpoints all read this table; adding a family is one file
// plus its entry in family.cpp and test cases.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include <nlohmann/json_fwd.hpp>

#include "model/config.h"
#include "model/config_keys.h"

namespace sy::model {

// The MoE knobs of a synthetic checkpoint that each family spells in its own config.json keys.
struct FamilyShape {
  int64_t num_experts = 0, top_k = 0;
  int64_t expert_ffn = 0;          // one routed expert's width
  int64_t dense_ffn = 0;           // dense layers' width
  int64_t shared_ffn = 0;          // total shared-expert width (0: none)
  int64_t first_dense_layers = 0;  // leading dense layers
  int64_t num_groups = 1, topk_groups = 1;
  float routed_scaling_factor = 1.0f;
  int norm_topk_prob = -1;  // -1: the family's default
  float clip_qkv = 0.0f;
  int64_t sparse_step = 0;                         // scmoe: MoE every N-th layer (0: 2)
  std::string shortcut = "pos2", combine = "cg1";  // scmoe: scmoe_shortcut / scmoe_combine
};

// One family, declared in one file under model/families/.
struct FamilyInfo {
  Family family;
  std::string_view name;          // "mixtral"
  std::string_view architecture;  // "MixtralForCausalLM"
  std::string_view moe_block;     // the MoE block's module: "block_sparse_moe." or "mlp."
  std::string_view expert_gate, expert_up, expert_down;  // per-expert projections
  std::string_view shared_expert;  // the shared expert(s)' module, "" when the family has none
  // Its own config.json keys onto the config: router, expert widths, attention variants,
  // which layers are MoE (the generic keys are already read; layer_is_moe is all true).
  void (*read_config)(const Keys& keys, ModelConfig& config);
  // The inverse for synthetic checkpoints: the shape's knobs as this family's keys (the
  // generic keys are written by the caller). Unsupported knobs are an error.
  void (*write_config)(const FamilyShape& shape, nlohmann::json& config);
  // The config.json keys of the routed experts' count and width (what expert partition
  // rewrites; the experts per token are "num_experts_per_tok" in every family).
  std::string_view experts_key, expert_ffn_key;
  // Set when the shared expert's width is this count times the routed experts' width
  // (DeepSeek-style "n_shared_experts"); "" when the shared width has its own key.
  std::string_view shared_count_key = "";
  // Tensor names under the MoE block: the router's weight, and the fused experts' tensors
  // ([E, 2I, H] gate rows first, and [E, H, I]) when the checkpoint stores them fused.
  std::string_view router_weight = "gate.weight";
  std::string_view fused_gate_up = "experts.gate_up_proj";
  std::string_view fused_down = "experts.down_proj";
  // The selection bias (DeepSeek-V3-style routing) under the MoE block, stored [E] or [1, E].
  std::string_view selection_bias = "gate.e_score_correction_bias";
  bool selection_bias_2d = false;
  // The q / k norms' weights under the attention module (when the config has them).
  std::string_view q_norm = "q_norm.weight", k_norm = "k_norm.weight";
  std::string_view dense_block = "mlp.";  // the dense layers' MLP module
  // Families with a config schema of their own (DBRX): renames their keys to the generic ones
  // (hidden_size, num_attention_heads, ...) before anything is read; `origin` names errors.
  void (*rename_keys)(nlohmann::json& config, const std::string& origin) = nullptr;
};

std::span<const FamilyInfo> families();
const FamilyInfo& family_info(Family family);
// By short name; sy::Error listing the names when unknown.
Family parse_family(std::string_view name);
// By config.json architecture; nullptr when unknown.
const FamilyInfo* find_family_by_architecture(std::string_view architecture);
std::string family_names();  // "mixtral | qwen2_moe | ..."

}  // namespace sy::model
