// Phi-3.5-MoE (PhimoeForCausalLM): SparseMixer routing (top-2; moe/router.h), Mixtral-style
// experts (w1 / w3 / w2 under block_sparse_moe), LayerNorm with bias instead of RMSNorm,
// q/k/v/o biases (attention_bias).
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_local_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  require(c.router.top_k == 2, k.origin(),
          "Phi-3.5-MoE's SparseMixer routes exactly 2 experts per token (num_experts_per_tok 2)");
  c.router.score = moe::ScoreFunc::kSparseMixer;
  const double eps = k.number_or("router_jitter_noise", 0.01);
  require(eps >= 0 && eps < 1, k.origin(), "router_jitter_noise must be in [0, 1)");
  c.router.sparsemixer_eps = float(eps);
  c.expert_intermediate_size = k.integer("intermediate_size");
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", true);
  c.layer_norm = true;
  require(!k.boolean_or("lm_head_bias", false), k.origin(),
          "lm_head_bias true is not implemented for Phi-3.5-MoE");
  if (const int64_t window = k.integer_or("sliding_window", 0); window > 0)
    c.layer_window.assign(size_t(c.num_layers), window);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 && s.first_dense_layers == 0, "phimoe",
          "has no shared expert and no dense layers");
  require(s.top_k == 2, "phimoe", "SparseMixer routes exactly 2 experts per token (--top-k 2)");
  c["num_local_experts"] = s.num_experts;
  c["intermediate_size"] = s.expert_ffn;
  c["attention_bias"] = true;
  c["router_jitter_noise"] = 0.01;
  c["lm_head_bias"] = false;
  c["rms_norm_eps"] = 1e-5;
}

}  // namespace

const FamilyInfo& phimoe() {
  static const FamilyInfo info{
      Family::kPhimoe, "phimoe", "PhimoeForCausalLM", "block_sparse_moe.", "w1", "w3", "w2", "",
      &read,           &write,   "num_local_experts", "intermediate_size"};
  return info;
}

}  // namespace sy::model::family_defs
