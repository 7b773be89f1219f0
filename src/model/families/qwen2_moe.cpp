// Qwen1.5-MoE / Qwen2-MoE (Qwen2MoeForCausalLM): softmax -> top-k (-> renormalise when
// norm_topk_prob), q/k/v biases, a sigmoid-gated shared expert, optional dense layers.
#include <algorithm>
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

void read_qwen_moe_layers(const Keys& k, ModelConfig& c, int64_t default_step) {
  require(!k.boolean_or("use_sliding_window", false), k.origin(),
          "use_sliding_window true (Qwen's sliding window above max_window_layers) is not "
          "implemented");
  const int64_t step = k.integer_or("decoder_sparse_step", default_step);
  require(step >= 1, k.origin(), "decoder_sparse_step must be >= 1");
  const auto mlp_only = k.int_list_or_empty("mlp_only_layers");
  for (int64_t i = 0; i < c.num_layers; ++i) {
    const bool dense = std::find(mlp_only.begin(), mlp_only.end(), i) != mlp_only.end();
    c.layer_is_moe[size_t(i)] = !dense && (i + 1) % step == 0;
  }
}

void write_qwen_moe_layers(const FamilyShape& s, nlohmann::json& c) {
  c["intermediate_size"] = s.dense_ffn;
  c["decoder_sparse_step"] = 1;
  std::vector<int64_t> mlp_only;
  for (int64_t l = 0; l < s.first_dense_layers; ++l) mlp_only.push_back(l);
  c["mlp_only_layers"] = mlp_only;
}

bool norm_topk(const FamilyShape& s, bool family_default) {
  return s.norm_topk_prob < 0 ? family_default : s.norm_topk_prob == 1;
}

namespace {

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = k.boolean_or("norm_topk_prob", false);
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.qkv_bias = k.boolean_or("qkv_bias", true);
  c.shared_intermediate_size = k.integer_or("shared_expert_intermediate_size", 0);
  c.shared_expert_gated = c.shared_intermediate_size > 0;
  read_qwen_moe_layers(k, c);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  c["num_experts"] = s.num_experts;
  c["moe_intermediate_size"] = s.expert_ffn;
  c["norm_topk_prob"] = norm_topk(s, false);
  c["shared_expert_intermediate_size"] = s.shared_ffn;
  write_qwen_moe_layers(s, c);
}

}  // namespace

const FamilyInfo& qwen2_moe() {
  static const FamilyInfo info{Family::kQwen2Moe,
                               "qwen2_moe",
                               "Qwen2MoeForCausalLM",
                               "mlp.",
                               "gate_proj",
                               "up_proj",
                               "down_proj",
                               "shared_expert.",
                               &read,
                               &write,
                               "num_experts",
                               "moe_intermediate_size"};
  return info;
}

}  // namespace sy::model::family_defs
