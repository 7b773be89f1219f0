#include "model/tensor_names.h"

#include "model/family.h"
#include "util/error.h"

namespace sy::model {

namespace {

FfnNames ffn(const std::string& prefix, const char* gate, const char* up, const char* down) {
  return {prefix + gate + ".weight", prefix + up + ".weight", prefix + down + ".weight"};
}

}  // namespace

std::string layer_prefix(int64_t layer) {
  return "model.layers." + std::to_string(layer) + ".";
}

std::string moe_prefix(const ModelConfig& c, int64_t layer) {
  return layer_prefix(layer) + std::string(family_info(c.family).moe_block);
}

FfnNames dense_ffn_names(const ModelConfig& c, int64_t layer) {
  return ffn(layer_prefix(layer) + std::string(family_info(c.family).dense_block), "gate_proj",
             "up_proj", "down_proj");
}

FfnNames expert_names(const ModelConfig& c, int64_t layer, int64_t expert) {
  const FamilyInfo& f = family_info(c.family);
  const std::string p = moe_prefix(c, layer) + "experts." + std::to_string(expert) + ".";
  return ffn(p, f.expert_gate.data(), f.expert_up.data(), f.expert_down.data());
}

FfnNames shared_expert_names(const ModelConfig& c, int64_t layer) {
  const FamilyInfo& f = family_info(c.family);
  SY_ASSERT_MSG(!f.shared_expert.empty(), "this family has no shared expert");
  return ffn(moe_prefix(c, layer) + std::string(f.shared_expert), "gate_proj", "up_proj",
             "down_proj");
}

}  // namespace sy::model
