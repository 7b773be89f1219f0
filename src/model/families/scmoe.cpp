// ScMoE (ScMoeForCausalLM, docs/scmoe.md): Qwen2-MoE's layout with a shared expert on the
// current layer and a routed branch that may read an earlier point of the residual stream
// through a shortcut, combined by direct add, CG-1 (sigmoid-gated shared expert) or CG-2
// (softmax over the two branches). Also expresses the paper's baselines (shortcut none).
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

std::string required_string(const Keys& k, const char* key) {
  if (!k.has(key))
    fail("{}: missing required key '{}' (ScMoE, see docs/scmoe.md)", k.origin(), key);
  return k.string_or(key, "");
}

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = k.boolean_or("norm_topk_prob", false);
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.qkv_bias = k.boolean_or("qkv_bias", false);
  c.shared_intermediate_size = k.integer_or("shared_expert_intermediate_size", 0);
  read_qwen_moe_layers(k, c, 2);
  c.shortcut = parse_shortcut(required_string(k, "scmoe_shortcut"), k.origin() + " scmoe_shortcut");
  const std::string combine = required_string(k, "scmoe_combine");
  if (combine == "cg1")
    c.shared_expert_gated = true;
  else if (combine == "cg2")
    c.branch_softmax_gate = true;
  else if (combine != "add")
    fail("{}: unknown scmoe_combine {} (expected add, cg1 or cg2)", k.origin(),
         excerpt_text(combine));
  const bool shared = c.shared_intermediate_size > 0;
  require(shared || combine == "add", k.origin(),
          fmt::format("scmoe_combine '{}' gates a shared expert, but "
                      "shared_expert_intermediate_size is 0",
                      combine));
  require(shared || c.shortcut == Shortcut::kNone, k.origin(),
          fmt::format("scmoe_shortcut '{}' needs a shared expert on the current layer "
                      "(shared_expert_intermediate_size > 0)",
                      shortcut_name(c.shortcut)));
  if (c.shortcut != Shortcut::kNone && !c.layer_is_moe.empty() && c.layer_is_moe[0])
    fail(
        "{}: layer 0 is an MoE layer with scmoe_shortcut '{}', but it has no preceding layer "
        "to read from; make layer 0 dense (decoder_sparse_step >= 2, or mlp_only_layers [0])",
        k.origin(), shortcut_name(c.shortcut));
}

void write(const FamilyShape& s, nlohmann::json& c) {
  c["num_experts"] = s.num_experts;
  c["moe_intermediate_size"] = s.expert_ffn;
  c["norm_topk_prob"] = norm_topk(s, false);
  c["shared_expert_intermediate_size"] = s.shared_ffn;
  c["qkv_bias"] = false;
  c["intermediate_size"] = s.dense_ffn;
  c["decoder_sparse_step"] = s.sparse_step > 0 ? s.sparse_step : 2;
  std::vector<int64_t> mlp_only;
  for (int64_t l = 0; l < s.first_dense_layers; ++l) mlp_only.push_back(l);
  c["mlp_only_layers"] = mlp_only;
  c["scmoe_shortcut"] = s.shortcut;
  c["scmoe_combine"] = s.combine;
}

}  // namespace

const FamilyInfo& scmoe() {
  static const FamilyInfo info{Family::kScMoe, "scmoe",          "ScMoeForCausalLM",
                               "mlp.",         "gate_proj",      "up_proj",
                               "down_proj",    "shared_expert.", &read,
                               &write,         "num_experts",    "moe_intermediate_size"};
  return info;
}

}  // namespace sy::model::family_defs
