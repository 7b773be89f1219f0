// The supported model families, each named once: its short name (make-tiny / train --family,
// config.json model_type), its Hugging Face architecture, and the tensor-naming choices that
// set it apart. The config reader, the loader, the trainer's binder and synthetic checkpoints
// all read this table.
#pragma once

#include <span>
#include <string>
#include <string_view>

#include "model/config.h"

namespace sy::model {

struct FamilyInfo {
  Family family;
  std::string_view name;          // "mixtral"
  std::string_view architecture;  // "MixtralForCausalLM"
  std::string_view moe_block;     // the MoE block's module: "block_sparse_moe." or "mlp."
  std::string_view expert_gate, expert_up, expert_down;  // per-expert projections
  std::string_view shared_expert;  // the shared expert(s)' module, "" when the family has none
};

std::span<const FamilyInfo> families();
const FamilyInfo& family_info(Family family);
// By short name; sy::Error listing the names when unknown.
Family parse_family(std::string_view name);
// By config.json architecture; nullptr when unknown.
const FamilyInfo* find_family_by_architecture(std::string_view architecture);
std::string family_names();  // "mixtral | qwen2_moe | ..."

}  // namespace sy::model
