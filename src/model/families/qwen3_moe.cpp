// Qwen3-MoE (Qwen3MoeForCausalLM): softmax -> top-k -> renormalise, per-head q/k RMSNorm,
// optional dense layers (mlp_only_layers), no shared expert.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  // transformers 5 writes num_local_experts; earlier versions num_experts.
  c.router.num_experts =
      k.small_count(k.has("num_local_experts") ? "num_local_experts" : "num_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = k.boolean_or("norm_topk_prob", true);
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
  c.qk_norm = QkNorm::kPerHead;
  read_qwen_moe_layers(k, c);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0, "qwen3_moe", "has no shared expert");
  c["num_experts"] = s.num_experts;
  c["moe_intermediate_size"] = s.expert_ffn;
  c["norm_topk_prob"] = norm_topk(s, true);
  c["attention_bias"] = false;
  write_qwen_moe_layers(s, c);
}

}  // namespace

const FamilyInfo& qwen3_moe() {
  static const FamilyInfo info{Family::kQwen3Moe,
                               "qwen3_moe",
                               "Qwen3MoeForCausalLM",
                               "mlp.",
                               "gate_proj",
                               "up_proj",
                               "down_proj",
                               "",
                               &read,
                               &write,
                               "num_experts",
                               "moe_intermediate_size"};
  return info;
}

}  // namespace sy::model::family_defs
