// DBRX (DbrxForCausalLM): its own config schema (d_model, n_heads, n_layers, max_seq_len,
// attn_config, ffn_config), renamed here to the generic keys before they are read; LayerNorm
// without bias (torch's default eps 1e-5, whatever rms_norm_eps says); q, k and v from one
// fused Wqkv, clamped to +-clip_qkv; softmax -> top-k router whose weights are divided by their
// p-norm (moe_normalize_expert_weights; p = 1 is the usual renormalisation); SwiGLU experts
// fused as w1 / v1 / w2 [E * I, H] (model/dbrx_checkpoint.h reads them).
#include <nlohmann/json.hpp>

#include "model/families/families.h"

namespace sy::model::family_defs {

namespace {

void rename_keys(nlohmann::json& j, const std::string& origin) {
  auto move = [&](const char* from, const char* to) {
    if (j.contains(from) && !j.contains(to)) j[to] = j[from];
  };
  move("d_model", "hidden_size");
  move("n_heads", "num_attention_heads");
  move("n_layers", "num_hidden_layers");
  move("max_seq_len", "max_position_embeddings");
  if (j.contains("attn_config")) {
    require(j["attn_config"].is_object(), origin, "attn_config must be an object");
    const nlohmann::json& a = j["attn_config"];
    if (a.contains("kv_n_heads") && !j.contains("num_key_value_heads"))
      j["num_key_value_heads"] = a["kv_n_heads"];
    if (a.contains("rope_theta") && !j.contains("rope_theta") && !j.contains("rope_parameters"))
      j["rope_theta"] = a["rope_theta"];
  }
  require(!j.contains("ffn_config") || j["ffn_config"].is_object(), origin,
          "ffn_config must be an object");
}

void read(const Keys& k, ModelConfig& c) {
  require(k.has("ffn_config"), k.origin(), "missing required key 'ffn_config'");
  const Keys f(k.raw()["ffn_config"], k.origin() + " ffn_config");
  moe::RouterConfig& r = c.router;
  r.num_experts = f.small_count_or("moe_num_experts", 4);
  r.top_k = f.small_count_or("moe_top_k", 1);
  r.score = moe::ScoreFunc::kSoftmax;
  const double p = f.number_or("moe_normalize_expert_weights", 0);
  require(p == 0 || p == 1, k.origin(),
          fmt::format("ffn_config.moe_normalize_expert_weights {} is not implemented (1: divide "
                      "by the sum, null: no normalisation)",
                      p));
  r.renormalize = p == 1;
  c.expert_intermediate_size = f.integer_or("ffn_hidden_size", 3584);
  if (f.has("ffn_act_fn")) {
    const Keys act(f.raw()["ffn_act_fn"], k.origin() + " ffn_config.ffn_act_fn");
    require(act.string_or("name", "silu") == "silu", k.origin(),
            "ffn_config.ffn_act_fn '" + act.string_or("name", "") + "' is not supported (silu)");
  }
  if (k.has("attn_config")) {
    const Keys a(k.raw()["attn_config"], k.origin() + " attn_config");
    c.clip_qkv = float(a.number_or("clip_qkv", 0));
    require(c.clip_qkv >= 0, k.origin(), "attn_config.clip_qkv must be positive");
  }
  c.layer_norm = true;
  c.norm_bias = false;
  c.rms_norm_eps = 1e-5f;  // nn.LayerNorm's default: DbrxConfig passes no eps
}

// The generic keys the caller wrote, moved into DBRX's schema.
void write(const FamilyShape& s, nlohmann::json& c) {
  require(s.shared_ffn == 0 && s.first_dense_layers == 0, "dbrx",
          "has no shared expert and no dense layers");
  if (c.is_null()) c = nlohmann::json::object();  // make-tiny's dry run checks the shape only
  const int64_t hidden = c.value("hidden_size", int64_t(0)),
                heads = c.value("num_attention_heads", int64_t(1));
  require(!c.contains("head_dim") || c["head_dim"].get<int64_t>() * heads == hidden, "dbrx",
          "heads are d_model / n_heads wide (no --head-dim)");
  c["d_model"] = hidden;
  c["n_heads"] = heads;
  c["n_layers"] = c.value("num_hidden_layers", int64_t(0));
  c["max_seq_len"] = c.value("max_position_embeddings", int64_t(4096));
  c["attn_config"] = {{"kv_n_heads", c.value("num_key_value_heads", heads)},
                      {"clip_qkv", s.clip_qkv > 0 ? s.clip_qkv : 8.0},
                      {"rope_theta", c.value("rope_theta", 10000.0)}};
  c["ffn_config"] = {{"ffn_hidden_size", s.expert_ffn},
                     {"moe_num_experts", s.num_experts},
                     {"moe_top_k", c.value("num_experts_per_tok", int64_t(2))},
                     {"moe_normalize_expert_weights", 1.0},
                     {"ffn_act_fn", {{"name", "silu"}}}};
  for (const char* key : {"hidden_size", "num_attention_heads", "num_hidden_layers",
                          "max_position_embeddings", "num_key_value_heads", "head_dim",
                          "rope_theta", "num_experts_per_tok", "rms_norm_eps", "hidden_act"})
    c.erase(key);
}

}  // namespace

const FamilyInfo& dbrx() {
  static FamilyInfo info{Family::kDbrx, "dbrx",    "DbrxForCausalLM", "ffn.",
                         "gate_proj",   "up_proj", "down_proj",       "",
                         &read,         &write,    "moe_num_experts", "ffn_hidden_size"};
  info.rename_keys = &rename_keys;
  return info;
}

}  // namespace sy::model::family_defs
