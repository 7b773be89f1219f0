// OLMoE (OlmoeForCausalLM): softmax -> top-k, RMSNorm over the whole q / k projections,
// optional clip_qkv; no shared expert, no dense layers.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = k.boolean_or("norm_topk_prob", false);
  c.expert_intermediate_size = k.integer("intermediate_size");
  c.qk_norm = QkNorm::kFullWidth;
  c.clip_qkv = float(k.number_or("clip_qkv", 0.0));
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 && s.first_dense_layers == 0, "olmoe",
          "has no shared expert and no dense layers");
  c["num_experts"] = s.num_experts;
  c["intermediate_size"] = s.expert_ffn;
  c["norm_topk_prob"] = norm_topk(s, false);
  c["clip_qkv"] = s.clip_qkv > 0 ? nlohmann::json(s.clip_qkv) : nlohmann::json(nullptr);
  c["attention_bias"] = false;
}

}  // namespace

const FamilyInfo& olmoe() {
  static const FamilyInfo info{Family::kOlmoe, "olmoe",   "OlmoeForCausalLM", "mlp.",
                               "gate_proj",    "up_proj", "down_proj",        "",
                               &read,          &write,    "num_experts",      "intermediate_size"};
  return info;
}

}  // namespace sy::model::family_defs
