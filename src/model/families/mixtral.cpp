// Mixtral (MixtralForCausalLM): softmax -> top-k -> renormalise; experts w1 / w3 / w2 under
// block_sparse_moe; no shared expert, no dense layers.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_local_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = true;
  c.expert_intermediate_size = k.integer("intermediate_size");
  // transformers applies a configured sliding window to every Mixtral layer.
  if (const int64_t window = k.integer_or("sliding_window", 0); window > 0)
    c.layer_window.assign(size_t(c.num_layers), window);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 && s.first_dense_layers == 0, "mixtral",
          "has no shared expert and no dense layers");
  c["num_local_experts"] = s.num_experts;
  c["intermediate_size"] = s.expert_ffn;
  c["sliding_window"] = nullptr;
}

}  // namespace

const FamilyInfo& mixtral() {
  static const FamilyInfo info{Family::kMixtral,
                               "mixtral",
                               "MixtralForCausalLM",
                               "block_sparse_moe.",
                               "w1",
                               "w3",
                               "w2",
                               "",
                               &read,
                               &write,
                               "num_local_experts",
                               "intermediate_size"};
  return info;
}

}  // namespace sy::model::family_defs
