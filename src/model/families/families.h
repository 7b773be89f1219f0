// The declarations of model/families/*.cpp, one per family (collected by model/family.cpp).
#pragma once

#include "model/family.h"

namespace sy::model::family_defs {

const FamilyInfo& mixtral();
const FamilyInfo& qwen2_moe();
const FamilyInfo& qwen3_moe();
const FamilyInfo& olmoe();
const FamilyInfo& dots1();
const FamilyInfo& scmoe();
const FamilyInfo& glm4_moe();
const FamilyInfo& granitemoe();
const FamilyInfo& deepseek_v2();
const FamilyInfo& deepseek_v3();
const FamilyInfo& gpt_oss();
const FamilyInfo& ernie4_5_moe();
const FamilyInfo& phimoe();

// Qwen-MoE's layer layout, shared by Qwen2-MoE and Qwen3-MoE: a layer is dense when listed in
// mlp_only_layers or off the decoder_sparse_step grid.
void read_qwen_moe_layers(const Keys& keys, ModelConfig& config, int64_t default_step = 1);
void write_qwen_moe_layers(const FamilyShape& shape, nlohmann::json& config);
// norm_topk_prob as written: the shape's choice, or the family default.
bool norm_topk(const FamilyShape& shape, bool family_default);

}  // namespace sy::model::family_defs
