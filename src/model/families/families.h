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
const FamilyInfo& hunyuan_v1_moe();
const FamilyInfo& dbrx();
const FamilyInfo& llama4_text();

// Qwen-MoE's layer layout, shared by Qwen2-MoE and Qwen3-MoE: a layer is dense when listed in
// mlp_only_layers or off the decoder_sparse_step grid.
void read_qwen_moe_layers(const Keys& keys, ModelConfig& config, int64_t default_step = 1);
void write_qwen_moe_layers(const FamilyShape& shape, nlohmann::json& config);
// DeepSeek-V3 routing, shared by dots.llm1, DeepSeek-V3 and GLM-4.5: sigmoid scores with a
// selection bias, group-limited top-k (top-2 sum), renormalise (norm_topk_prob, default as
// given), routed scaling; the routed experts' count under `experts_key`.
void read_v3_routing(const Keys& keys, ModelConfig& config, const char* experts_key,
                     bool renormalize_default);
// The shape's MoE keys as those families write them (n_routed_experts, n_shared_experts,
// moe_intermediate_size, first_k_dense_replace, groups, scaling); `family` names errors.
void write_v3_moe(const FamilyShape& shape, nlohmann::json& config, const char* family);

// norm_topk_prob as written: the shape's choice, or the family default.
bool norm_topk(const FamilyShape& shape, bool family_default);

}  // namespace sy::model::family_defs
