// Granite MoE (GraniteMoeForCausalLM): top-k of the router logits then softmax over them (the
// same as softmax -> top-k -> renormalise), experts stored fused (input_linear [E, 2I, H] with
// the gate rows first, output_linear [E, H, I]), router under router.layer; the embeddings,
// the blocks' outputs, the attention scores and the logits carry the multipliers of the config.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

float positive(const Keys& k, const char* key, double fallback) {
  const double v = k.number_or(key, fallback);
  require(v > 0 && v < 1e30, k.origin(), fmt::format("{} {} must be positive", key, v));
  return float(v);
}

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_local_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = true;
  c.expert_intermediate_size = k.integer("intermediate_size");
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
  c.embedding_multiplier = positive(k, "embedding_multiplier", 1.0);
  c.residual_multiplier = positive(k, "residual_multiplier", 1.0);
  c.attention_multiplier = positive(k, "attention_multiplier", 1.0);  // transformers default
  c.logits_scaling = positive(k, "logits_scaling", 1.0);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 && s.first_dense_layers == 0, "granitemoe",
          "has no shared expert and no dense layers");
  c["num_local_experts"] = s.num_experts;
  c["intermediate_size"] = s.expert_ffn;
  c["embedding_multiplier"] = 12.0;  // Granite-3.0-style values
  c["residual_multiplier"] = 0.22;
  c["attention_multiplier"] = 0.0625;
  c["logits_scaling"] = 8.0;
}

}  // namespace

const FamilyInfo& granitemoe() {
  static const FamilyInfo info{Family::kGraniteMoe,
                               "granitemoe",
                               "GraniteMoeForCausalLM",
                               "block_sparse_moe.",
                               "",
                               "",
                               "",
                               "",
                               &read,
                               &write,
                               "num_local_experts",
                               "intermediate_size",
                               "",
                               "router.layer.weight",
                               "input_linear.weight",
                               "output_linear.weight"};
  return info;
}

}  // namespace sy::model::family_defs
