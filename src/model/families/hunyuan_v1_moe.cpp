// Hunyuan-MoE (HunYuanMoEV1ForCausalLM, transformers 5): softmax -> top-k -> renormalise over
// per-expert SwiGLU experts, plus an ungated shared MLP; every layer MoE; experts and the
// shared MLP both intermediate_size wide (transformers 5 reads no other width); per-head q/k
// RMSNorm (query_layernorm / key_layernorm) applied after RoPE; the router gate.wg in float32.
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

// num_experts and moe_topk may be per-layer lists in Tencent's configs; one value for all
// layers is what Switchyard runs.
int uniform_count(const Keys& k, const char* key) {
  const std::vector<int64_t> v = k.int_list_or_empty(key);
  if (v.empty()) fail("{}: missing required key '{}'", k.origin(), key);
  for (int64_t x : v)
    require(x == v[0], k.origin(),
            fmt::format("'{}' differs between layers; Switchyard needs one value for all", key));
  return k.narrow(key, v[0]);
}

void read(const Keys& k, ModelConfig& c) {
  moe::RouterConfig& r = c.router;
  r.num_experts = uniform_count(k, "num_experts");
  r.top_k = uniform_count(k, "moe_topk");
  r.score = moe::ScoreFunc::kSoftmax;
  r.renormalize = true;
  require(c.dense_intermediate_size > 0, k.origin(), "missing required key 'intermediate_size'");
  c.expert_intermediate_size = c.dense_intermediate_size;
  c.shared_intermediate_size = c.dense_intermediate_size;
  c.qk_norm = QkNorm::kPerHeadAfterRope;
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.first_dense_layers == 0, "hunyuan_v1_moe", "every Hunyuan-MoE layer is MoE");
  require(s.shared_ffn == 0 || s.shared_ffn == s.expert_ffn, "hunyuan_v1_moe",
          "the shared MLP is as wide as one expert");
  c["num_experts"] = s.num_experts;
  c["moe_topk"] = c.contains("num_experts_per_tok") ? c["num_experts_per_tok"] : nlohmann::json(2);
  c["intermediate_size"] = s.expert_ffn;
  c["moe_intermediate_size"] = s.expert_ffn;
  c["attention_bias"] = false;
}

}  // namespace

const FamilyInfo& hunyuan_v1_moe() {
  static FamilyInfo info{Family::kHunyuanMoe,
                         "hunyuan_v1_moe",
                         "HunYuanMoEV1ForCausalLM",
                         "mlp.",
                         "gate_proj",
                         "up_proj",
                         "down_proj",
                         "shared_mlp.",
                         &read,
                         &write,
                         "num_experts",
                         "intermediate_size"};
  info.router_weight = "gate.wg.weight";
  info.q_norm = "query_layernorm.weight";
  info.k_norm = "key_layernorm.weight";
  return info;
}

}  // namespace sy::model::family_defs
