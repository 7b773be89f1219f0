#include "model/family.h"

#include "util/error.h"

namespace sy::model {

namespace {

constexpr FamilyInfo kFamilies[] = {
    {Family::kMixtral, "mixtral", "MixtralForCausalLM", "block_sparse_moe.", "w1", "w3", "w2", ""},
    {Family::kQwen2Moe, "qwen2_moe", "Qwen2MoeForCausalLM", "mlp.", "gate_proj", "up_proj",
     "down_proj", "shared_expert."},
    {Family::kQwen3Moe, "qwen3_moe", "Qwen3MoeForCausalLM", "mlp.", "gate_proj", "up_proj",
     "down_proj", ""},
    {Family::kOlmoe, "olmoe", "OlmoeForCausalLM", "mlp.", "gate_proj", "up_proj", "down_proj", ""},
    {Family::kDots1, "dots1", "Dots1ForCausalLM", "mlp.", "gate_proj", "up_proj", "down_proj",
     "shared_experts."},
};

}  // namespace

std::span<const FamilyInfo> families() {
  return kFamilies;
}

const FamilyInfo& family_info(Family family) {
  for (const FamilyInfo& f : kFamilies)
    if (f.family == family) return f;
  SY_ASSERT_MSG(false, "a Family without an entry in kFamilies");
  return kFamilies[0];
}

Family parse_family(std::string_view name) {
  for (const FamilyInfo& f : kFamilies)
    if (f.name == name) return f.family;
  fail("unknown family '{}' (expected {})", name, family_names());
}

const FamilyInfo* find_family_by_architecture(std::string_view architecture) {
  for (const FamilyInfo& f : kFamilies)
    if (f.architecture == architecture) return &f;
  return nullptr;
}

std::string family_names() {
  std::string out;
  for (const FamilyInfo& f : kFamilies) out += (out.empty() ? "" : " | ") + std::string(f.name);
  return out;
}

}  // namespace sy::model
