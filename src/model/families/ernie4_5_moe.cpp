// ERNIE-4.5-MoE (Ernie4_5_MoeForCausalLM): softmax scores, top-k chosen on scores plus a
// correction bias (moe_statics), the chosen scores renormalised; shared experts; MoE layers from
// moe_layer_start_index to moe_layer_end_index every moe_layer_interval; RoPE on interleaved
// pairs.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  moe::RouterConfig& r = c.router;
  r.num_experts = k.small_count("moe_num_experts");
  r.top_k = k.small_count("moe_k");
  r.score = moe::ScoreFunc::kSoftmax;
  r.has_selection_bias = true;
  // transformers divides by max(sum, moe_norm_min); for any sum above 1e-12 that is the plain
  // renormalisation.
  r.renormalize = true;
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.shared_intermediate_size =
      k.integer_or("moe_num_shared_experts", 0) * c.expert_intermediate_size;
  require(!k.boolean_or("use_bias", false), k.origin(),
          "use_bias true (biases on every linear layer) is not implemented for ERNIE-4.5");
  c.rope_interleaved = true;
  const int64_t start = k.integer_or("moe_layer_start_index", 0);
  int64_t end = k.integer_or("moe_layer_end_index", -1);
  if (end < 0) end = c.num_layers - 1;
  const int64_t interval = k.integer_or("moe_layer_interval", 1);
  require(start >= 0 && interval >= 1, k.origin(),
          "moe_layer_start_index must be >= 0 and moe_layer_interval >= 1");
  for (int64_t l = 0; l < c.num_layers; ++l)
    c.layer_is_moe[size_t(l)] = (l + 1) % interval == 0 && l >= start && l <= end;
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn % s.expert_ffn == 0, "ernie4_5_moe",
          "shared width must be a multiple of the expert width");
  c["moe_num_experts"] = s.num_experts;
  c["moe_k"] = c.contains("num_experts_per_tok") ? c["num_experts_per_tok"] : nlohmann::json(2);
  c["moe_intermediate_size"] = s.expert_ffn;
  c["moe_num_shared_experts"] = s.shared_ffn / s.expert_ffn;
  c["intermediate_size"] = s.dense_ffn;
  c["moe_layer_start_index"] = s.first_dense_layers;
  c["moe_layer_interval"] = 1;
  c["use_bias"] = false;
}

}  // namespace

const FamilyInfo& ernie4_5_moe() {
  static FamilyInfo info{Family::kErnie45Moe,
                         "ernie4_5_moe",
                         "Ernie4_5_MoeForCausalLM",
                         "mlp.",
                         "gate_proj",
                         "up_proj",
                         "down_proj",
                         "shared_experts.",
                         &read,
                         &write,
                         "moe_num_experts",
                         "moe_intermediate_size",
                         "moe_num_shared_experts"};
  info.selection_bias = "moe_statics.e_score_correction_bias";
  info.selection_bias_2d = true;
  return info;
}

}  // namespace sy::model::family_defs
