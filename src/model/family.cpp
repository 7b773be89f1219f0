#include "model/family.h"

#include <vector>

#include "model/families/families.h"
#include "util/error.h"

namespace sy::model {

namespace {

// Every family, in the order listings show them.
const std::vector<FamilyInfo>& all_families() {
  static const std::vector<FamilyInfo> all = {
      family_defs::mixtral(),        family_defs::qwen2_moe(),    family_defs::qwen3_moe(),
      family_defs::olmoe(),          family_defs::dots1(),        family_defs::glm4_moe(),
      family_defs::granitemoe(),     family_defs::deepseek_v2(),  family_defs::deepseek_v3(),
      family_defs::gpt_oss(),        family_defs::ernie4_5_moe(), family_defs::phimoe(),
      family_defs::hunyuan_v1_moe(), family_defs::dbrx(),         family_defs::llama4_text(),
      family_defs::scmoe()};
  return all;
}

}  // namespace

std::span<const FamilyInfo> families() {
  return all_families();
}

const FamilyInfo& family_info(Family family) {
  for (const FamilyInfo& f : all_families())
    if (f.family == family) return f;
  SY_ASSERT_MSG(false, "a Family without an entry in all_families()");
  return all_families()[0];
}

Family parse_family(std::string_view name) {
  for (const FamilyInfo& f : all_families())
    if (f.name == name) return f.family;
  fail("unknown family '{}' (expected {})", name, family_names());
}

const FamilyInfo* find_family_by_architecture(std::string_view architecture) {
  for (const FamilyInfo& f : all_families())
    if (f.architecture == architecture) return &f;
  return nullptr;
}

std::string family_names() {
  std::string out;
  for (const FamilyInfo& f : all_families())
    out += (out.empty() ? "" : " | ") + std::string(f.name);
  return out;
}

}  // namespace sy::model
