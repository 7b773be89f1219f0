#include "model/config.h"

#include <cmath>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "model/config_keys.h"
#include "model/family.h"
#include "model/gguf_checkpoint.h"
#include "util/error.h"

namespace sy::model {
namespace {

constexpr int64_t kMaxVocab = int64_t(1) << 26;    // 67 M tokens
constexpr int64_t kMaxWidth = int64_t(1) << 20;    // hidden, head_dim, FFN widths
constexpr int64_t kMaxExperts = int64_t(1) << 16;  // routed experts per layer (DeepSeek-V3: 256)
constexpr int64_t kMaxPositions = int64_t(1) << 31;
constexpr int64_t kMaxLayers = 4096;
constexpr int64_t kMaxHeads = 65536;

using json = nlohmann::json;

Family family_from_architecture(const std::string& arch, const std::string& origin) {
  if (const FamilyInfo* f = find_family_by_architecture(arch)) return f->family;
  std::string supported;
  for (const FamilyInfo& f : families())
    supported += (supported.empty() ? "" : ", ") + std::string(f.architecture);
  fail("{}: unknown architecture '{}'; supported: {}", origin, arch, supported);
}

}  // namespace

float ModelConfig::attention_scale() const {
  return attention_multiplier != 0.0f ? attention_multiplier : 1.0f / std::sqrt(float(head_dim));
}

std::string ModelConfig::family_name() const {
  return std::string(family_info(family).name);
}

int64_t ModelConfig::shortcut_point(int64_t layer) const {
  switch (shortcut) {
    case Shortcut::kNone:
      return 2 * layer + 1;
    case Shortcut::kPos1:
      return 2 * layer;
    case Shortcut::kPos2:
      return 2 * layer - 1;
    case Shortcut::kPos3:
      return 2 * layer - 2;
  }
  return 2 * layer + 1;
}

Shortcut parse_shortcut(const std::string& name, const std::string& origin) {
  for (Shortcut s : {Shortcut::kNone, Shortcut::kPos1, Shortcut::kPos2, Shortcut::kPos3})
    if (name == shortcut_name(s)) return s;
  fail("{}: unknown ScMoE shortcut position {} (expected none, pos1, pos2 or pos3)", origin,
       excerpt_text(name));
}

const char* shortcut_name(Shortcut s) {
  switch (s) {
    case Shortcut::kNone:
      return "none";
    case Shortcut::kPos1:
      return "pos1";
    case Shortcut::kPos2:
      return "pos2";
    case Shortcut::kPos3:
      return "pos3";
  }
  return "?";
}

ModelConfig parse_config(const std::string& text, const std::string& origin) {
  json j = parse_json_bounded(text, origin);
  if (!j.is_object()) fail("{}: expected a JSON object", origin);

  ModelConfig c;
  if (!j.contains("architectures") || !j["architectures"].is_array() ||
      j["architectures"].empty() || !j["architectures"][0].is_string())
    fail("{}: missing 'architectures' (e.g. [\"MixtralForCausalLM\"])", origin);
  c.architecture = j["architectures"][0].get<std::string>();
  c.family = family_from_architecture(c.architecture, origin);
  if (const auto rename = family_info(c.family).rename_keys) rename(j, origin);
  const Keys k(j, origin);

  c.vocab_size = k.integer("vocab_size");
  c.hidden_size = k.integer("hidden_size");
  c.num_layers = k.integer("num_hidden_layers");
  c.num_heads = k.integer("num_attention_heads");
  c.num_kv_heads = k.integer_or("num_key_value_heads", c.num_heads);
  require(c.vocab_size > 0 && c.hidden_size > 0 && c.num_layers > 0 && c.num_heads > 0 &&
              c.num_kv_heads > 0,
          origin, "vocab_size, hidden_size, num_hidden_layers and head counts must be positive");
  // Bounds far above any published model, so that no size derived from the file overflows or
  // asks for an absurd allocation before the tensors are even looked at.
  require(c.vocab_size <= kMaxVocab && c.hidden_size <= kMaxWidth && c.num_layers <= kMaxLayers &&
              c.num_heads <= kMaxHeads && c.num_kv_heads <= kMaxHeads,
          origin,
          fmt::format("implausible shape: vocab_size {} (max {}), hidden_size {} (max {}), "
                      "num_hidden_layers {} (max {}), heads {} / {} (max {})",
                      c.vocab_size, kMaxVocab, c.hidden_size, kMaxWidth, c.num_layers, kMaxLayers,
                      c.num_heads, c.num_kv_heads, kMaxHeads));
  c.head_dim = k.integer_or("head_dim", 0);
  if (c.head_dim == 0) {
    require(c.hidden_size % c.num_heads == 0, origin,
            fmt::format("hidden_size {} is not divisible by num_attention_heads {} (and no "
                        "head_dim is given)",
                        c.hidden_size, c.num_heads));
    c.head_dim = c.hidden_size / c.num_heads;
  }
  require(c.head_dim > 0 && c.head_dim <= kMaxWidth && c.num_heads * c.head_dim <= kMaxWidth * 4,
          origin,
          fmt::format("head_dim {} x {} heads is outside 1 .. {}", c.head_dim, c.num_heads,
                      kMaxWidth * 4));
  require(c.head_dim % 2 == 0, origin,
          fmt::format("head_dim {} must be even for RoPE", c.head_dim));
  require(c.num_heads % c.num_kv_heads == 0, origin,
          fmt::format("num_attention_heads {} is not a multiple of num_key_value_heads {}",
                      c.num_heads, c.num_kv_heads));
  c.max_position_embeddings = k.integer_or("max_position_embeddings", 4096);
  require(c.max_position_embeddings >= 1 && c.max_position_embeddings <= kMaxPositions, origin,
          fmt::format("max_position_embeddings {} is outside 1 .. {}", c.max_position_embeddings,
                      kMaxPositions));
  const double eps = k.number_or("rms_norm_eps", 1e-6);
  require(eps >= 0 && eps < 1, origin, fmt::format("rms_norm_eps {} is outside [0, 1)", eps));
  c.rms_norm_eps = float(eps);
  const double theta = k.number_or("rope_theta", 10000.0);
  require(theta > 0 && theta < 1e30, origin, fmt::format("rope_theta {} must be positive", theta));
  c.rope_theta = float(theta);
  // transformers applies partial_rotary_factor in every family's rotary tables (top level in
  // older configs, inside rope_parameters in v5's).
  double partial = k.number_or("partial_rotary_factor", 1.0);
  // RoPE parameters: transformers 5 writes rope_parameters, older versions rope_scaling.
  const char* rope_key = j.contains("rope_parameters") && j["rope_parameters"].is_object()
                             ? "rope_parameters"
                         : k.has("rope_scaling") ? "rope_scaling"
                                                 : nullptr;
  if (rope_key) {
    require(j[rope_key].is_object(), origin, fmt::format("{} must be an object", rope_key));
    Keys rp(j[rope_key], origin + " " + rope_key);
    const double rp_theta = rp.number_or("rope_theta", c.rope_theta);
    require(rp_theta > 0 && rp_theta < 1e30, origin,
            fmt::format("{}.rope_theta {} must be positive", rope_key, rp_theta));
    c.rope_theta = float(rp_theta);
    const std::string type = rp.string_or("rope_type", rp.string_or("type", "default"));
    partial = rp.number_or("partial_rotary_factor", partial);
    if (type == "yarn") {
      RopeScaling& y = c.rope_scaling;
      y.yarn = true;
      y.factor = rp.number_or("factor", 0);
      require(y.factor > 0 && y.factor < 1e6, origin,
              fmt::format("{}: YaRN needs a positive factor (got {})", rope_key, y.factor));
      y.original_max_positions = rp.number_or("original_max_position_embeddings", 0);
      y.beta_fast = rp.number_or("beta_fast", 32);
      y.beta_slow = rp.number_or("beta_slow", 1);
      y.truncate = rp.boolean_or("truncate", true);
      y.attention_factor = rp.number_or("attention_factor", 0);
      y.mscale = rp.number_or("mscale", 0);
      y.mscale_all_dim = rp.number_or("mscale_all_dim", 0);
      require(y.beta_fast > 0 && y.beta_slow > 0 && y.original_max_positions >= 0 &&
                  y.attention_factor >= 0,
              origin,
              fmt::format("{}: YaRN's beta_fast, beta_slow and attention_factor must be "
                          "positive",
                          rope_key));
    } else if (type == "longrope") {
      RopeScaling& y = c.rope_scaling;
      y.longrope = true;
      auto factors = [&](const char* key) {
        const std::vector<double> v = rp.number_list_or_empty(key);
        require(!v.empty(), origin, fmt::format("{}: longrope needs {}", rope_key, key));
        std::vector<float> out;
        for (double f : v) {
          require(f > 0 && f < 1e9, origin,
                  fmt::format("{}: {} values must be positive", rope_key, key));
          out.push_back(float(f));
        }
        return out;
      };
      y.short_factor = factors("short_factor");
      y.long_factor = factors("long_factor");
      y.short_mscale = rp.number_or("short_mscale", 0);
      y.long_mscale = rp.number_or("long_mscale", 0);
      y.attention_factor = rp.number_or("attention_factor", 0);
      y.original_max_positions = rp.number_or("original_max_position_embeddings",
                                              k.number_or("original_max_position_embeddings", 0));
      require(y.original_max_positions >= 1 && y.short_mscale >= 0 && y.long_mscale >= 0 &&
                  y.attention_factor >= 0,
              origin,
              fmt::format("{}: longrope needs original_max_position_embeddings and non-negative "
                          "mscales",
                          rope_key));
    } else if (type == "llama3") {
      RopeScaling& y = c.rope_scaling;
      y.llama3 = true;
      y.factor = rp.number_or("factor", 0);
      y.low_freq_factor = rp.number_or("low_freq_factor", 1);
      y.high_freq_factor = rp.number_or("high_freq_factor", 4);
      y.original_max_positions = rp.number_or("original_max_position_embeddings", 0);
      require(y.factor > 0 && y.factor < 1e6 && y.low_freq_factor > 0 &&
                  y.high_freq_factor >= y.low_freq_factor && y.original_max_positions > 0,
              origin,
              fmt::format("{}: llama3 RoPE needs a positive factor, 0 < low_freq_factor <= "
                          "high_freq_factor and original_max_position_embeddings",
                          rope_key));
    } else {
      require(type == "default", origin,
              fmt::format("{}: rope_type '{}' is not implemented (default, yarn, llama3, longrope)",
                          rope_key, excerpt_text(type, 40)));
    }
  }
  require(partial > 0 && partial <= 1, origin,
          fmt::format("partial_rotary_factor {} is outside (0, 1]", partial));
  if (partial < 1) {
    c.rotary_dim = int64_t(double(c.head_dim) * partial);  // as transformers truncates it
    require(c.rotary_dim >= 2 && c.rotary_dim % 2 == 0, origin,
            fmt::format("partial_rotary_factor {} of head_dim {} gives {} rotary values; RoPE "
                        "needs an even count of at least 2",
                        partial, c.head_dim, c.rotary_dim));
  }
  if (const RopeScaling& y = c.rope_scaling; y.longrope)
    require(int64_t(y.short_factor.size()) == c.rope_dim() / 2 &&
                int64_t(y.long_factor.size()) == c.rope_dim() / 2,
            origin,
            fmt::format("longrope's short_factor and long_factor need {} values (rotary dims / 2), "
                        "got {} and {}",
                        c.rope_dim() / 2, y.short_factor.size(), y.long_factor.size()));
  c.tie_word_embeddings = k.boolean_or("tie_word_embeddings", false);
  if (k.has("hidden_act"))
    require(k.string_or("hidden_act", "silu") == "silu", origin,
            "hidden_act '" + k.string_or("hidden_act", "") + "' is not supported (only silu)");

  auto& r = c.router;
  c.dense_intermediate_size = k.integer_or("intermediate_size", 0);
  c.layer_is_moe.assign(size_t(c.num_layers), true);
  family_info(c.family).read_config(k, c);
  require(r.num_experts >= 1 && r.num_experts <= kMaxExperts, origin,
          fmt::format("the number of experts {} is outside 1 .. {}", r.num_experts, kMaxExperts));
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
  require(c.expert_intermediate_size > 0 && c.expert_intermediate_size <= kMaxWidth, origin,
          fmt::format("expert intermediate size {} is outside 1 .. {}", c.expert_intermediate_size,
                      kMaxWidth));
  require(c.dense_intermediate_size >= 0 && c.dense_intermediate_size <= kMaxWidth &&
              c.shared_intermediate_size >= 0 && c.shared_intermediate_size <= kMaxWidth,
          origin,
          fmt::format("intermediate sizes must be in 0 .. {} (dense {}, shared {})", kMaxWidth,
                      c.dense_intermediate_size, c.shared_intermediate_size));
  for (size_t i = 0; i < c.layer_is_moe.size(); ++i)
    require(c.layer_is_moe[i] || c.dense_intermediate_size > 0, origin,
            "dense layers need 'intermediate_size'");

  if (k.has("expert_partition")) {
    require(j["expert_partition"].is_object(), origin, "expert_partition must be an object");
    Keys p(j["expert_partition"], origin + " expert_partition");
    r.sub_experts = p.small_count("factor");
    const std::string mode = p.string_or("mode", "complete");
    require(mode == "complete" || mode == "partial", origin,
            fmt::format("expert_partition mode '{}' is neither complete nor partial",
                        excerpt_text(mode, 40)));
    r.expand_parts = mode == "partial";
    c.partition_reconstructed = p.boolean_or("reconstructed", false);
    require(
        r.sub_experts >= 1 && r.num_experts % r.sub_experts == 0 && r.top_k % r.sub_experts == 0,
        origin,
        fmt::format("expert_partition factor {} must divide the experts ({}) and "
                    "num_experts_per_tok ({})",
                    r.sub_experts, r.num_experts, r.top_k));
    require(!r.expand_parts || r.num_groups == 1 || r.num_logits() % r.num_groups == 0, origin,
            fmt::format("n_group {} must divide the {} experts the partial partition's gate routes",
                        r.num_groups, r.num_logits()));
  }

  auto token_id = [&](const char* key, int64_t id) {
    require(id >= -1 && id < c.vocab_size, origin,
            fmt::format("{} {} is not a token id below vocab_size {}", key, id, c.vocab_size));
    return int32_t(id);
  };
  c.bos_token_id = token_id("bos_token_id", k.integer_or("bos_token_id", -1));
  c.eos_token_ids.clear();
  for (int64_t id : k.int_list_or_empty("eos_token_id"))
    c.eos_token_ids.push_back(token_id("eos_token_id", id));
  return c;
}

ModelConfig load_config(const std::string& model_dir) {
  if (is_gguf_file(model_dir))
    return parse_config(gguf_config_json(io::GgufFile(model_dir)), model_dir + " (GGUF metadata)");
  const std::string path = model_dir + "/config.json";
  if (!std::filesystem::is_directory(model_dir))
    fail("model directory '{}' does not exist", model_dir);
  if (!io::file_exists(path)) fail("'{}' has no config.json", model_dir);
  return parse_config(io::read_text_file(path), path);
}

}  // namespace sy::model
