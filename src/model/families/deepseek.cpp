// DeepSeek-V2 (DeepseekV2ForCausalLM) and DeepSeek-V3 (DeepseekV3ForCausalLM; also Kimi K2 and
// Moonlight): multi-head latent attention (model/mla_attention.h) with or without q-LoRA,
// shared experts, leading dense layers.
//   V2: softmax scores, top-k greedy or group-limited (group score = its best expert), no
//       renormalisation (transformers' DeepseekV2MoEGate ignores norm_topk_prob), routed scaling;
//       RoPE on interleaved pairs.
//   V3: sigmoid scores with a selection bias, group-limited top-k (group score = its top-2
//       sum), renormalise, routed scaling; RoPE interleaved unless rope_interleave is false.
#include <algorithm>

#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read_mla(const Keys& k, ModelConfig& c) {
  MlaConfig& m = c.mla;
  m.q_lora_rank = k.integer_or("q_lora_rank", 0);
  m.kv_lora_rank = k.integer("kv_lora_rank");
  m.qk_nope_dim = k.integer("qk_nope_head_dim");
  m.qk_rope_dim = k.integer("qk_rope_head_dim");
  m.v_head_dim = k.integer("v_head_dim");
  constexpr int64_t kMax = int64_t(1) << 16;
  require(m.q_lora_rank >= 0 && m.q_lora_rank <= kMax && m.kv_lora_rank > 0 &&
              m.kv_lora_rank <= kMax && m.qk_nope_dim >= 0 && m.qk_nope_dim <= kMax &&
              m.qk_rope_dim > 0 && m.qk_rope_dim <= kMax && m.qk_rope_dim % 2 == 0 &&
              m.v_head_dim > 0 && m.v_head_dim <= kMax,
          k.origin(),
          fmt::format("MLA shape out of range: q_lora_rank {}, kv_lora_rank {}, qk_nope_head_dim "
                      "{}, qk_rope_head_dim {} (even), v_head_dim {}",
                      m.q_lora_rank, m.kv_lora_rank, m.qk_nope_dim, m.qk_rope_dim, m.v_head_dim));
  c.rotary_dim = m.qk_rope_dim;  // the rotary tables cover the rope part of each head
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);  // q_a, kv_a and o
}

void read_layers(const Keys& k, ModelConfig& c, bool with_freq) {
  c.expert_intermediate_size = k.integer("moe_intermediate_size");
  c.shared_intermediate_size = k.integer_or("n_shared_experts", 0) * c.expert_intermediate_size;
  const int64_t first_dense = k.integer_or("first_k_dense_replace", 0);
  const int64_t freq = with_freq ? k.integer_or("moe_layer_freq", 1) : 1;
  require(first_dense >= 0 && first_dense <= c.num_layers && freq >= 1, k.origin(),
          "first_k_dense_replace must be between 0 and num_hidden_layers, moe_layer_freq >= 1");
  for (int64_t i = 0; i < c.num_layers; ++i)
    c.layer_is_moe[size_t(i)] = i >= first_dense && i % freq == 0;
}

void read_v2(const Keys& k, ModelConfig& c) {
  moe::RouterConfig& r = c.router;
  r.num_experts = k.small_count("n_routed_experts");
  r.top_k = k.small_count("num_experts_per_tok");
  const std::string scoring = k.string_or("scoring_func", "softmax");
  require(scoring == "softmax", k.origin(),
          fmt::format("scoring_func '{}' is not implemented for DeepSeek-V2 (softmax)", scoring));
  r.score = moe::ScoreFunc::kSoftmax;
  r.renormalize = false;
  r.routed_scaling_factor = float(k.number_or("routed_scaling_factor", 1.0));
  const std::string method = k.string_or("topk_method", "greedy");
  if (method == "group_limited_greedy") {
    r.num_groups = k.small_count_or("n_group", 1);
    r.topk_groups = k.small_count_or("topk_group", 1);
    r.group_score = moe::GroupScore::kMax;
  } else {
    require(method == "greedy", k.origin(),
            fmt::format("topk_method '{}' is not implemented for DeepSeek-V2 (greedy, "
                        "group_limited_greedy)",
                        method));
  }
  read_layers(k, c, true);
  read_mla(k, c);
}

void read_v3(const Keys& k, ModelConfig& c) {
  read_v3_routing(k, c, "n_routed_experts", true);
  read_layers(k, c, false);
  read_mla(k, c);
  c.mla.interleaved_rope = k.boolean_or("rope_interleave", true);
}

// make-tiny's MLA shape, from the head size it was given: nope and v widths = head_dim, rope
// half of it, latent 2x, q-LoRA (V3) 3x; head_dim becomes the rope width, as transformers 5
// writes it.
void write_common(const FamilyShape& s, nlohmann::json& c, bool v3) {
  write_v3_moe(s, c, v3 ? "deepseek_v3" : "deepseek_v2");
  const int64_t hd = c.contains("head_dim") ? c["head_dim"].get<int64_t>() : 16;
  const int64_t rope = std::max<int64_t>(2, hd / 2 / 2 * 2);
  c["qk_nope_head_dim"] = hd;
  c["qk_rope_head_dim"] = rope;
  c["v_head_dim"] = hd;
  c["kv_lora_rank"] = 2 * hd;
  c["q_lora_rank"] = v3 ? nlohmann::json(3 * hd) : nlohmann::json(nullptr);
  c["head_dim"] = rope;
  c["attention_bias"] = false;
}

void write_v2(const FamilyShape& s, nlohmann::json& c) {
  require(s.norm_topk_prob != 1, "deepseek_v2", "does not renormalise the top-k weights");
  write_common(s, c, false);
  c["scoring_func"] = "softmax";
  c["topk_method"] = s.num_groups > 1 ? "group_limited_greedy" : "greedy";
  c["norm_topk_prob"] = false;
}

void write_v3(const FamilyShape& s, nlohmann::json& c) {
  write_common(s, c, true);
  c["norm_topk_prob"] = norm_topk(s, true);
  c["rope_interleave"] = true;
}

}  // namespace

const FamilyInfo& deepseek_v2() {
  static const FamilyInfo info{Family::kDeepseekV2,
                               "deepseek_v2",
                               "DeepseekV2ForCausalLM",
                               "mlp.",
                               "gate_proj",
                               "up_proj",
                               "down_proj",
                               "shared_experts.",
                               &read_v2,
                               &write_v2,
                               "n_routed_experts",
                               "moe_intermediate_size",
                               "n_shared_experts"};
  return info;
}

const FamilyInfo& deepseek_v3() {
  static const FamilyInfo info{Family::kDeepseekV3,
                               "deepseek_v3",
                               "DeepseekV3ForCausalLM",
                               "mlp.",
                               "gate_proj",
                               "up_proj",
                               "down_proj",
                               "shared_experts.",
                               &read_v3,
                               &write_v3,
                               "n_routed_experts",
                               "moe_intermediate_size",
                               "n_shared_experts"};
  return info;
}

}  // namespace sy::model::family_defs
