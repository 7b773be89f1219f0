// GLM-4.5 / 4.6 (Glm4MoeForCausalLM): DeepSeek-V3 routing (sigmoid scores with a selection bias,
// group-limited top-k, renormalise, routed scaling) with shared experts and leading dense
// layers, on attention with partial rotary (partial_rotary_factor, NeoX halves within the
// rotated part), q/k/v biases when attention_bias (o_proj has none), optional per-head q/k
// RMSNorm (use_qk_norm).
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  read_v3_routing(k, c, k.has("n_routed_experts") ? "n_routed_experts" : "num_experts", true);
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.shared_intermediate_size = k.integer_or("n_shared_experts", 1) * c.expert_intermediate_size;
  c.qk_norm = k.boolean_or("use_qk_norm", false) ? QkNorm::kPerHead : QkNorm::kNone;
  c.qkv_bias = k.boolean_or("attention_bias", false);
  c.o_bias = false;
  const int64_t first_dense = k.integer_or("first_k_dense_replace", 1);
  require(first_dense >= 0 && first_dense <= c.num_layers, k.origin(),
          "first_k_dense_replace must be between 0 and num_hidden_layers");
  for (int64_t i = 0; i < first_dense; ++i) c.layer_is_moe[size_t(i)] = false;
}

void write(const FamilyShape& s, nlohmann::json& c) {
  write_v3_moe(s, c, "glm4_moe");
  // GLM-4.5 always has shared experts: one expert's width unless told otherwise.
  if (s.shared_ffn == 0) c["n_shared_experts"] = 1;
  c["norm_topk_prob"] = norm_topk(s, true);
  c["partial_rotary_factor"] = 0.5;  // GLM-4.5's, and what sets the family apart
  c["use_qk_norm"] = false;
  c["attention_bias"] = true;
}

}  // namespace

const FamilyInfo& glm4_moe() {
  static const FamilyInfo info{Family::kGlm4Moe,
                               "glm4_moe",
                               "Glm4MoeForCausalLM",
                               "mlp.",
                               "gate_proj",
                               "up_proj",
                               "down_proj",
                               "shared_experts.",
                               &read,
                               &write,
                               "n_routed_experts",
                               "moe_intermediate_size",
                               "n_shared_experts"};
  return info;
}

}  // namespace sy::model::family_defs
