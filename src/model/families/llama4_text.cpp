// Llama 4 text (Llama4ForCausalLM; the language model of Scout and Maverick): top-k on the
// router's logits, each chosen expert weighted by sigmoid(logit) -- on its input, expert(w x),
// not on its output -- plus an ungated shared expert; MoE layers from moe_layers (or every
// interleave_moe_layer_step-th), dense ones intermediate_size_mlp wide; experts fused as
// gate_up [E, H, 2I] / down [E, I, H]; RoPE on interleaved pairs (llama3 scaling allowed) except
// in the NoPE layers (no_rope_layers[l] = 0), which scale their queries by the attention
// temperature instead; q and k L2-normalised after RoPE (use_qk_norm); chunked attention in the
// layers layer_types marks "chunked_attention" (attention_chunk_size positions per chunk).
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void read(const Keys& k, ModelConfig& c) {
  moe::RouterConfig& r = c.router;
  r.num_experts = k.small_count("num_local_experts");
  r.top_k = k.small_count_or("num_experts_per_tok", 1);
  r.score = moe::ScoreFunc::kSigmoid;  // ranking sigmoid(logits) = ranking the logits
  r.renormalize = false;
  c.expert_input_scaled = true;
  c.expert_intermediate_size = k.integer("intermediate_size");
  c.shared_intermediate_size = c.expert_intermediate_size;
  c.dense_intermediate_size = k.integer_or("intermediate_size_mlp", 0);
  c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
  c.rope_interleaved = true;
  if (!k.has("rms_norm_eps")) c.rms_norm_eps = 1e-5f;  // Llama4TextConfig's default
  const int64_t L = c.num_layers;

  // Which layers are MoE.
  std::vector<int64_t> moe_layers = k.int_list_or_empty("moe_layers");
  if (!k.has("moe_layers")) {
    const int64_t step = k.integer_or("interleave_moe_layer_step", 1);
    require(step >= 1, k.origin(), "interleave_moe_layer_step must be >= 1");
    for (int64_t l = step - 1; l < L; l += step) moe_layers.push_back(l);
  }
  c.layer_is_moe.assign(size_t(L), false);
  for (int64_t l : moe_layers) {
    require(l >= 0 && l < L, k.origin(),
            fmt::format("moe_layers names layer {}, but the model has {}", l, L));
    c.layer_is_moe[size_t(l)] = true;
  }

  // Which layers rotate (no_rope_layers[l] = 1 means RoPE, as transformers reads it).
  std::vector<int64_t> rope = k.int_list_or_empty("no_rope_layers");
  if (rope.empty()) {
    const int64_t interval = k.integer_or("no_rope_layer_interval", 4);
    require(interval >= 1, k.origin(), "no_rope_layer_interval must be >= 1");
    for (int64_t l = 0; l < L; ++l) rope.push_back((l + 1) % interval != 0);
  }
  require(int64_t(rope.size()) == L, k.origin(),
          fmt::format("no_rope_layers has {} entries for {} layers", rope.size(), L));
  c.layer_nope.assign(size_t(L), false);
  for (int64_t l = 0; l < L; ++l) {
    require(rope[size_t(l)] == 0 || rope[size_t(l)] == 1, k.origin(),
            "no_rope_layers entries must be 0 or 1");
    c.layer_nope[size_t(l)] = rope[size_t(l)] == 0;
  }
  if (k.boolean_or("attn_temperature_tuning", true)) {
    c.attn_temperature_scale = float(k.number_or("attn_scale", 0.1));
    c.attn_floor_scale = float(k.number_or("floor_scale", 8192));
    require(c.attn_temperature_scale >= 0 && c.attn_floor_scale > 0, k.origin(),
            "attn_scale must be >= 0 and floor_scale positive");
  }
  c.qk_norm = k.boolean_or("use_qk_norm", true) ? QkNorm::kL2AfterRope : QkNorm::kNone;

  // Chunked attention: layer_types as written, else chunked where RoPE is used.
  const int64_t chunk = k.integer_or("attention_chunk_size", 8192);
  require(chunk >= 1, k.origin(), "attention_chunk_size must be >= 1");
  c.layer_chunk.assign(size_t(L), 0);
  if (k.has("layer_types")) {
    const nlohmann::json& types = k.raw()["layer_types"];
    require(types.is_array() && int64_t(types.size()) == L, k.origin(),
            fmt::format("layer_types must list one type per layer ({})", L));
    for (int64_t l = 0; l < L; ++l) {
      const nlohmann::json& t = types[size_t(l)];
      require(t.is_string() && (t == "chunked_attention" || t == "full_attention"), k.origin(),
              "layer_types entries must be \"chunked_attention\" or \"full_attention\"");
      if (t == "chunked_attention") c.layer_chunk[size_t(l)] = chunk;
    }
  } else {
    for (int64_t l = 0; l < L; ++l)
      if (!c.layer_nope[size_t(l)]) c.layer_chunk[size_t(l)] = chunk;
  }
}

void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 || s.shared_ffn == s.expert_ffn, "llama4_text",
          "the shared expert is as wide as one routed expert");
  c["num_local_experts"] = s.num_experts;
  c["intermediate_size"] = s.expert_ffn;
  c["intermediate_size_mlp"] = s.dense_ffn > 0 ? s.dense_ffn : 4 * s.expert_ffn;
  const int64_t layers = c.value("num_hidden_layers", int64_t(0));
  nlohmann::json moe = nlohmann::json::array();
  for (int64_t l = s.first_dense_layers; l < layers; ++l) moe.push_back(l);
  c["moe_layers"] = moe;  // NoPE every 4th layer, chunked attention elsewhere (the defaults)
  c["attention_chunk_size"] = 8192;
  c["use_qk_norm"] = true;
  c["rope_theta"] = 500000.0;
}

}  // namespace

const FamilyInfo& llama4_text() {
  static FamilyInfo info{Family::kLlama4, "llama4_text", "Llama4ForCausalLM", "feed_forward.",
                         "gate_proj",     "up_proj",     "down_proj",         "shared_expert.",
                         &read,           &write,        "num_local_experts", "intermediate_size"};
  info.router_weight = "router.weight";
  info.dense_block = "feed_forward.";
  return info;
}

}  // namespace sy::model::family_defs
