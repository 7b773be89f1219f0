#include "model/config.h"

#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "model/family.h"
#include "util/error.h"

namespace sy::model {
namespace {

using json = nlohmann::json;

// Typed access to config.json keys with errors that name the key.
class Keys {
 public:
  Keys(const json& j, std::string origin) : j_(j), origin_(std::move(origin)) {}

  bool has(const char* key) const { return j_.contains(key) && !j_[key].is_null(); }

  int64_t integer(const char* key) const {
    if (!has(key)) fail("{}: missing required key '{}'", origin_, key);
    return integer_or(key, 0);
  }
  // A count that must fit comfortably in an int (experts, top-k, groups).
  int small_count(const char* key) const { return narrow(key, integer(key)); }
  int small_count_or(const char* key, int fallback) const {
    return narrow(key, integer_or(key, fallback));
  }
  int narrow(const char* key, int64_t v) const {
    if (v < 0 || v > (1 << 20)) fail("{}: key '{}' = {} is out of range", origin_, key, v);
    return int(v);
  }
  int64_t integer_or(const char* key, int64_t fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_number_integer())
      fail("{}: key '{}' must be an integer, got {}", origin_, key, v.dump());
    return v.get<int64_t>();
  }
  double number_or(const char* key, double fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_number()) fail("{}: key '{}' must be a number, got {}", origin_, key, v.dump());
    return v.get<double>();
  }
  bool boolean_or(const char* key, bool fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_boolean()) fail("{}: key '{}' must be true or false, got {}", origin_, key, v.dump());
    return v.get<bool>();
  }
  std::string string_or(const char* key, const std::string& fallback) const {
    if (!has(key)) return fallback;
    const json& v = j_[key];
    if (!v.is_string()) fail("{}: key '{}' must be a string, got {}", origin_, key, v.dump());
    return v.get<std::string>();
  }
  std::vector<int64_t> int_list_or_empty(const char* key) const {
    std::vector<int64_t> out;
    if (!has(key)) return out;
    const json& v = j_[key];
    if (v.is_number_integer()) return {v.get<int64_t>()};
    if (!v.is_array()) fail("{}: key '{}' must be an integer or a list of integers", origin_, key);
    for (const auto& x : v) {
      if (!x.is_number_integer()) fail("{}: key '{}' must hold integers", origin_, key);
      out.push_back(x.get<int64_t>());
    }
    return out;
  }
  const json& raw() const { return j_; }
  const std::string& origin() const { return origin_; }

 private:
  const json& j_;
  std::string origin_;
};

Family family_from_architecture(const std::string& arch, const std::string& origin) {
  if (const FamilyInfo* f = find_family_by_architecture(arch)) return f->family;
  if (arch == "DeepseekV2ForCausalLM" || arch == "DeepseekV3ForCausalLM")
    fail(
        "{}: architecture '{}' uses multi-head latent attention (MLA), which Switchyard does not "
        "implement yet; DeepSeek-style routing on standard attention is supported as "
        "Dots1ForCausalLM",
        origin, arch);
  std::string supported;
  for (const FamilyInfo& f : families())
    supported += (supported.empty() ? "" : ", ") + std::string(f.architecture);
  fail("{}: unknown architecture '{}'; supported: {}", origin, arch, supported);
}

void require(bool ok, const std::string& origin, const std::string& what) {
  if (!ok) fail("{}: {}", origin, what);
}

}  // namespace

std::string ModelConfig::family_name() const {
  return std::string(family_info(family).name);
}

ModelConfig parse_config(const std::string& text, const std::string& origin) {
  json j;
  try {
    j = json::parse(text);
  } catch (const json::exception& e) {
    fail("{}: not valid JSON ({})", origin, e.what());
  }
  if (!j.is_object()) fail("{}: expected a JSON object", origin);
  Keys k(j, origin);

  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string())
    fail("{}: missing 'architectures' (e.g. [\"MixtralForCausalLM\"])", origin);
  c.architecture = j["architectures"][0].get<std::string>();
  c.family = family_from_architecture(c.architecture, origin);

  c.vocab_size = k.integer("vocab_size");
  c.hidden_size = k.integer("hidden_size");
  c.num_layers = k.integer("num_hidden_layers");
  c.num_heads = k.integer("num_attention_heads");
  c.num_kv_heads = k.integer_or("num_key_value_heads", c.num_heads);
  require(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0 &&
              c.num_kv_heads > 0,
          origin, "vocab_size, hidden_size, num_hidden_layers and head counts must be positive");
  c.head_dim = k.integer_or("head_dim", 0);
  if (c.head_dim == 0) {
    require(c.hidden_size % c.num_heads == 0, origin,
            fmt::format("hidden_size {} is not divisible by num_attention_heads {} (and no "
                        "head_dim is given)",
                        c.hidden_size, c.num_heads));
    c.head_dim = c.hidden_size / c.num_heads;
  }
  require(c.head_dim % 2 == 0, origin,
          fmt::format("head_dim {} must be even for RoPE", c.head_dim));
  require(c.num_heads % c.num_kv_heads == 0, origin,
          fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                      c.num_heads, c.num_kv_heads));
  c.max_position_embeddings = k.integer_or("max_position_embeddings", 4096);
  c.rms_norm_eps = float(k.number_or("rms_norm_eps", 1e-6));
  c.rope_theta = float(k.number_or("rope_theta", 10000.0));
  if (j.contains("rope_parameters") && j["rope_parameters"].is_object()) {
    Keys rp(j["rope_parameters"], origin + " rope_parameters");
    c.rope_theta = float(rp.number_or("rope_theta", c.rope_theta));
    std::string type = rp.string_or("rope_type", "default");
    require(type == "default", origin, "rope_type '" + type + "' is not supported yet");
  }
  if (k.has("rope_scaling")) {
    const json& rs = j["rope_scaling"];
    std::string type =
        rs.is_object()
            ? Keys(rs, origin).string_or("rope_type", Keys(rs, origin).string_or("type", "default"))
            : "?";
    require(type == "default", origin, "rope_scaling type '" + type + "' is not supported yet");
  }
  c.tie_word_embeddings = k.boolean_or("tie_word_embeddings", false);
  if (k.has("hidden_act"))
    require(k.string_or("hidden_act", "silu") == "silu", origin,
            "hidden_act '" + k.string_or("hidden_act", "") + "' is not supported (only silu)");

  auto& r = c.router;
  c.dense_intermediate_size = k.integer_or("intermediate_size", 0);
  const int64_t num_layers = c.num_layers;
  c.layer_is_moe.assign(size_t(num_layers), true);
  switch (c.family) {
    case Family::kMixtral:
      r.num_experts = k.small_count("num_local_experts");
      r.top_k = k.small_count("num_experts_per_tok");
      r.renormalize = true;
      c.expert_intermediate_size = k.integer("intermediate_size");
      break;
    case Family::kQwen2Moe:
    case Family::kQwen3Moe: {
      r.num_experts = k.small_count("num_experts");
      r.top_k = k.small_count("num_experts_per_tok");
      r.renormalize = k.boolean_or("norm_topk_prob", c.family == Family::kQwen3Moe);
      c.expert_intermediate_size = k.integer("moe_intermediate_size");
      if (c.family == Family::kQwen2Moe) {
        c.qkv_bias = k.boolean_or("qkv_bias", true);
        c.shared_intermediate_size = k.integer_or("shared_expert_intermediate_size", 0);
        c.shared_expert_gated = c.shared_intermediate_size > 0;
      } else {
        c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
        c.qk_norm = QkNorm::kPerHead;
      }
      const int64_t step = k.integer_or("decoder_sparse_step", 1);
      require(step >= 1, origin, "decoder_sparse_step must be >= 1");
      const auto mlp_only = k.int_list_or_empty("mlp_only_layers");
      for (int64_t i = 0; i < num_layers; ++i) {
        bool dense = std::find(mlp_only.begin(), mlp_only.end(), i) != mlp_only.end();
        c.layer_is_moe[size_t(i)] = !dense && (i + 1) % step == 0;
      }
      break;
    }
    case Family::kOlmoe:
      r.num_experts = k.small_count("num_experts");
      r.top_k = k.small_count("num_experts_per_tok");
      r.renormalize = k.boolean_or("norm_topk_prob", false);
      c.expert_intermediate_size = k.integer("intermediate_size");
      c.qk_norm = QkNorm::kFullWidth;
      c.clip_qkv = float(k.number_or("clip_qkv", 0.0));
      c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
      break;
    case Family::kDots1: {
      r.num_experts = k.small_count("n_routed_experts");
      r.top_k = k.small_count("num_experts_per_tok");
      r.score = moe::ScoreFunc::kSigmoid;
      r.has_selection_bias = true;
      r.renormalize = k.boolean_or("norm_topk_prob", false);
      r.renormalize_epsilon = 1e-20f;
      r.routed_scaling_factor = float(k.number_or("routed_scaling_factor", 1.0));
      r.num_groups = k.small_count_or("n_group", 1);
      r.topk_groups = k.small_count_or("topk_group", 1);
      r.group_score = moe::GroupScore::kTop2Sum;
      c.expert_intermediate_size = k.integer("moe_intermediate_size");
      c.shared_intermediate_size = k.integer_or("n_shared_experts", 0) * c.expert_intermediate_size;
      c.qk_norm = QkNorm::kPerHead;
      c.qkv_bias = c.o_bias = k.boolean_or("attention_bias", false);
      const int64_t first_dense = k.integer_or("first_k_dense_replace", 0);
      require(first_dense >= 0 && first_dense <= num_layers, origin,
              "first_k_dense_replace must be between 0 and num_hidden_layers");
      for (int64_t i = 0; i < first_dense; ++i) c.layer_is_moe[size_t(i)] = false;
      break;
    }
  }
  require(r.num_experts >= 1, origin, "the number of experts must be at least 1");
  require(r.top_k >= 1 && r.top_k <= r.num_experts, origin,
          fmt::format("num_experts_per_tok {} must be between 1 and the number of experts {}",
                      r.top_k, r.num_experts));
  require(
      r.num_groups >= 1 && r.num_experts % r.num_groups == 0, origin,
      fmt::format("n_group {} must divide the number of experts {}", r.num_groups, r.num_experts));
  require(r.topk_groups >= 1 && r.topk_groups <= r.num_groups, origin,
          "topk_group must be between 1 and n_group");
  require(r.num_groups == 1 || r.top_k <= r.topk_groups * (r.num_experts / r.num_groups), origin,
          "num_experts_per_tok exceeds the experts in the selected groups");
  require(c.expert_intermediate_size > 0, origin, "expert intermediate size must be positive");
  for (size_t i = 0; i < c.layer_is_moe.size(); ++i)
    require(c.layer_is_moe[i] || c.dense_intermediate_size > 0, origin,
            "dense layers need 'intermediate_size'");

  c.bos_token_id = int32_t(k.integer_or("bos_token_id", -1));
  c.eos_token_ids.clear();
  for (int64_t id : k.int_list_or_empty("eos_token_id")) c.eos_token_ids.push_back(int32_t(id));
  return c;
}

ModelConfig load_config(const std::string& model_dir) {
  const std::string path = model_dir + "/config.json";
  if (!std::filesystem::is_directory(model_dir))
    fail("model directory '{}' does not exist", model_dir);
  if (!io::file_exists(path)) fail("'{}' has no config.json", model_dir);
  return parse_config(io::read_text_file(path), path);
}

}  // namespace sy::model
