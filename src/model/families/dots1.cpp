// dots.llm1 (Dots1ForCausalLM), DeepSeek-V3 routing on standard attention: sigmoid scores with a
// selection bias, group-limited top-k (top-2 sum), renormalise, routed scaling; shared experts,
// leading dense layers, per-head q/k RMSNorm.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  read_v3_routing(k, c, "n_routed_experts", false);
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.shared_intermediate_size = k.integer_or("n_shared_experts", 0) * c.expert_intermediate_size;
  c.qk_norm = QkNorm::kPerHead;
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
  const int64_t first_dense = k.integer_or("first_k_dense_replace", 0);
  require(first_dense >= 0 && first_dense <= c.num_layers, k.origin(),
          "first_k_dense_replace must be between 0 and num_hidden_layers");
  for (int64_t i = 0; i < first_dense; ++i) c.layer_is_moe[size_t(i)] = false;
}

void write(const FamilyShape& s, nlohmann::json& c) {
  write_v3_moe(s, c, "dots1");
  c["norm_topk_prob"] = norm_topk(s, true);
  c["scoring_func"] = "noaux_tc";
  c["attention_bias"] = false;
}

}  // namespace

void read_v3_routing(const Keys& k, ModelConfig& c, const char* experts_key,
                     bool renormalize_default) {
  moe::RouterConfig& r = c.router;
  r.num_experts = k.small_count(experts_key);
  r.top_k = k.small_count("num_experts_per_tok");
  r.score = moe::ScoreFunc::kSigmoid;
  r.has_selection_bias = true;
  r.renormalize = k.boolean_or("norm_topk_prob", renormalize_default);
  r.renormalize_epsilon = 1e-20f;
  r.routed_scaling_factor = float(k.number_or("routed_scaling_factor", 1.0));
  r.num_groups = k.small_count_or("n_group", 1);
  r.topk_groups = k.small_count_or("topk_group", 1);
  r.group_score = moe::GroupScore::kTop2Sum;
}

void write_v3_moe(const FamilyShape& s, nlohmann::json& c, const char* family) {
  require(s.shared_ffn % s.expert_ffn == 0, family,
          "shared width must be a multiple of the expert width");
  c["n_routed_experts"] = s.num_experts;
  c["n_shared_experts"] = s.shared_ffn / s.expert_ffn;
  c["moe_intermediate_size"] = s.expert_ffn;
  c["intermediate_size"] = s.dense_ffn;
  c["first_k_dense_replace"] = s.first_dense_layers;
  c["n_group"] = s.num_groups;
  c["topk_group"] = s.topk_groups;
  c["routed_scaling_factor"] = s.routed_scaling_factor;
}

const FamilyInfo& dots1() {
  static const FamilyInfo info{Family::kDots1,
                               "dots1",
                               "Dots1ForCausalLM",
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
