// GPT-OSS (GptOssForCausalLM): attention with q/k/v/o biases, per-head sinks and alternating
// sliding-window / full layers (layer_types), YaRN RoPE on NeoX halves; a router with a bias,
// top-k of its logits then softmax over them (the same as softmax -> top-k -> renormalise);
// experts with biases and the clamped SwiGLU, stored as gate_up [E, H, 2I] (gate and up
// columns interleaved) and down [E, I, H] (model/weights.cpp rearranges them).
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  c.router.num_experts = k.small_count("num_local_experts");
  c.router.top_k = k.small_count("num_experts_per_tok");
  c.router.renormalize = true;
  c.router_bias = true;
  c.expert_intermediate_size = k.integer("intermediate_size");
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", true);
  c.attention_sinks = true;
  const double limit = k.number_or("swiglu_limit", 7.0);
  require(limit > 0 && limit < 1e30, k.origin(), "swiglu_limit must be positive");
  c.swiglu_limit = float(limit);
  const int64_t window = k.integer_or("sliding_window", 0);
  c.layer_window.assign(size_t(c.num_layers), 0);
  const nlohmann::json& types =
      k.raw().contains("layer_types") ? k.raw()["layer_types"] : nlohmann::json();
  require(types.is_array() && int64_t(types.size()) == c.num_layers, k.origin(),
          "layer_types must list one attention type per layer");
  for (size_t l = 0; l < types.size(); ++l) {
    const std::string t = types[l].is_string() ? types[l].get<std::string>() : "?";
    require(t == "sliding_attention" || t == "full_attention", k.origin(),
            fmt::format("layer_types[{}] '{}' is neither sliding_attention nor full_attention", l,
                        excerpt_text(t, 40)));
    if (t == "sliding_attention") {
      require(window > 0, k.origin(), "sliding_attention layers need a positive sliding_window");
      c.layer_window[l] = window;
    }
  }
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 && s.first_dense_layers == 0, "gpt_oss",
          "has no shared expert and no dense layers");
  c["num_local_experts"] = s.num_experts;
  c["intermediate_size"] = s.expert_ffn;
  c["attention_bias"] = true;
  c["swiglu_limit"] = 7.0;
  c["sliding_window"] = 128;
  // gpt-oss-20b's pattern: sliding and full attention alternate, sliding first.
  nlohmann::json types = nlohmann::json::array();
  for (int64_t l = 0; l < c.value("num_hidden_layers", int64_t(0)); ++l)
    types.push_back(l % 2 == 0 ? "sliding_attention" : "full_attention");
  c["layer_types"] = types;
}

}  // namespace

const FamilyInfo& gpt_oss() {
  static const FamilyInfo info{Family::kGptOss,
                               "gpt_oss",
                               "GptOssForCausalLM",
                               "mlp.",
                               "",
                               "",
                               "",
                               "",
                               &read,
                               &write,
                               "num_local_experts",
                               "intermediate_size",
                               "",
                               "router.weight",
                               "",
                               ""};
  return info;
}

}  // namespace sy::model::family_defs
