// parse_config (src/model/config.h): each family's config.json keys mapped onto ModelConfig,
// and every rejection naming the origin and the offending key. The expected mappings are
// written from the Hugging Face semantics in /work/shared/reference/formats.md section 3
// (e.g. Qwen2-MoE: MoE iff layer not in mlp_only_layers and (layer+1) % decoder_sparse_step == 0).
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include <unistd.h>

#include "model/config.h"
#include "util/error.h"

namespace sy::model {
namespace {

using json = nlohmann::json;
const std::string kOrigin = "/models/tiny/config.json";

json common(const char* arch) {
  return {{"architectures", {arch}},
          {"vocab_size", 320},
          {"hidden_size", 64},
          {"num_hidden_layers", 4},
          {"num_attention_heads", 8},
          {"num_key_value_heads", 2},
          {"max_position_embeddings", 512},
          {"rms_norm_eps", 1e-5},
          {"rope_theta", 1e6},
          {"hidden_act", "silu"},
          {"tie_word_embeddings", false},
          {"bos_token_id", 1},
          {"eos_token_id", 2}};
}

json mixtral() {
  json j = common("MixtralForCausalLM");
  j["intermediate_size"] = 96;
  j["num_local_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  return j;
}
json qwen2_moe() {
  json j = common("Qwen2MoeForCausalLM");
  j["intermediate_size"] = 128;
  j["moe_intermediate_size"] = 32;
  j["shared_expert_intermediate_size"] = 80;
  j["num_experts"] = 6;
  j["num_experts_per_tok"] = 3;
  return j;
}
json qwen3_moe() {
  json j = common("Qwen3MoeForCausalLM");
  j["head_dim"] = 16;  // q width 128 != hidden 64, as Qwen3 allows
  j["moe_intermediate_size"] = 32;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  return j;
}
json olmoe() {
  json j = common("OlmoeForCausalLM");
  j["intermediate_size"] = 48;
  j["num_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  return j;
}
json dots1() {
  json j = common("Dots1ForCausalLM");
  j["intermediate_size"] = 128;
  j["moe_intermediate_size"] = 32;
  j["n_routed_experts"] = 8;
  j["num_experts_per_tok"] = 2;
  j["n_shared_experts"] = 2;
  j["n_group"] = 4;
  j["topk_group"] = 2;
  j["routed_scaling_factor"] = 2.5;
  j["norm_topk_prob"] = true;
  j["first_k_dense_replace"] = 1;
  return j;
}

// DBRX as transformers 5 writes it (its own schema; the generic keys absent).
json dbrx() {
  return {{"architectures", {"DbrxForCausalLM"}},
          {"vocab_size", 320},
          {"d_model", 64},
          {"n_heads", 4},
          {"n_layers", 3},
          {"max_seq_len", 256},
          {"attn_config", {{"kv_n_heads", 2}, {"clip_qkv", 8.0}, {"rope_theta", 5e5}}},
          {"ffn_config",
           {{"ffn_hidden_size", 48},
            {"moe_num_experts", 8},
            {"moe_top_k", 2},
            {"moe_normalize_expert_weights", 1.0},
            {"ffn_act_fn", {{"name", "silu"}}}}}};
}
json hunyuan() {
  json j = common("HunYuanMoEV1ForCausalLM");
  j["intermediate_size"] = 96;
  j["moe_intermediate_size"] = 96;
  j["num_experts"] = {8, 8, 8, 8};  // per layer, as Tencent's configs may write it
  j["moe_topk"] = 2;
  return j;
}
// Llama 4 with transformers' defaults for the per-layer lists (derived, not written).
json llama4() {
  json j = common("Llama4ForCausalLM");
  j["num_hidden_layers"] = 8;
  j["intermediate_size"] = 32;
  j["intermediate_size_mlp"] = 128;
  j["num_local_experts"] = 4;
  j["num_experts_per_tok"] = 1;
  j["interleave_moe_layer_step"] = 2;
  j["attention_chunk_size"] = 16;
  return j;
}

ModelConfig parse(const json& j) {
  return parse_config(j.dump(), kOrigin);
}

TEST(Config, Dbrx) {
  const ModelConfig c = parse(dbrx());
  EXPECT_EQ(c.family, Family::kDbrx);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_heads, 4);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.num_layers, 3);
  EXPECT_EQ(c.max_position_embeddings, 256);
  EXPECT_FLOAT_EQ(c.rope_theta, 5e5f);
  EXPECT_EQ(c.router.num_experts, 8);
  EXPECT_EQ(c.router.top_k, 2);
  EXPECT_TRUE(c.router.renormalize);
  EXPECT_EQ(c.expert_intermediate_size, 48);
  EXPECT_FLOAT_EQ(c.clip_qkv, 8.0f);
  EXPECT_TRUE(c.layer_norm);
  EXPECT_FALSE(c.norm_bias);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);  // nn.LayerNorm's default, not rms_norm_eps
  json j = dbrx();
  j["ffn_config"]["moe_normalize_expert_weights"] = nullptr;
  EXPECT_FALSE(parse(j).router.renormalize);
}

TEST(Config, HunyuanMoe) {
  const ModelConfig c = parse(hunyuan());
  EXPECT_EQ(c.family, Family::kHunyuanMoe);
  EXPECT_EQ(c.router.num_experts, 8);
  EXPECT_EQ(c.router.top_k, 2);
  EXPECT_TRUE(c.router.renormalize);
  EXPECT_EQ(c.expert_intermediate_size, 96);
  EXPECT_EQ(c.shared_intermediate_size, 96);
  EXPECT_EQ(c.qk_norm, QkNorm::kPerHeadAfterRope);
  EXPECT_TRUE(std::all_of(c.layer_is_moe.begin(), c.layer_is_moe.end(), [](bool m) { return m; }));
}

// transformers' Llama4TextConfig defaults: MoE layers every interleave_moe_layer_step-th
// (1, 3, 5, 7), NoPE every no_rope_layer_interval-th (4 by default: layers 3 and 7), chunked
// attention exactly where RoPE is used.
TEST(Config, Llama4TextDefaults) {
  const ModelConfig c = parse(llama4());
  EXPECT_EQ(c.family, Family::kLlama4);
  for (int64_t l = 0; l < 8; ++l) {
    SCOPED_TRACE("layer " + std::to_string(l));
    EXPECT_EQ(c.layer_is_moe[size_t(l)], l % 2 == 1);
    EXPECT_EQ(c.rotates(l), (l + 1) % 4 != 0);
    EXPECT_EQ(c.chunk(l), (l + 1) % 4 != 0 ? 16 : 0);
  }
  EXPECT_EQ(c.dense_intermediate_size, 128);
  EXPECT_EQ(c.expert_intermediate_size, 32);
  EXPECT_EQ(c.shared_intermediate_size, 32);
  EXPECT_EQ(c.router.score, moe::ScoreFunc::kSigmoid);
  EXPECT_FALSE(c.router.renormalize);
  EXPECT_TRUE(c.expert_input_scaled);
  EXPECT_TRUE(c.rope_interleaved);
  EXPECT_EQ(c.qk_norm, QkNorm::kL2AfterRope);
  EXPECT_FLOAT_EQ(c.attn_temperature_scale, 0.1f);
  EXPECT_FLOAT_EQ(c.attn_floor_scale, 8192.0f);
}

void expect_rejected(const std::string& text, const std::vector<std::string>& needles,
                     const std::string& what) {
  try {
    parse_config(text, kOrigin);
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos)
          << what << ": message does not mention \"" << n << "\"\n  message: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-sy::Error exception: " << e.what();
    return;
  }
  ADD_FAILURE() << what << ": accepted";
}

TEST(Config, BaseConfigsParse) {
  // The controls for the rejection table: each base config is accepted as written.
  for (const auto& [name, j] : std::vector<std::pair<const char*, json>>{{"mixtral", mixtral()},
                                                                         {"qwen2_moe", qwen2_moe()},
                                                                         {"qwen3_moe", qwen3_moe()},
                                                                         {"olmoe", olmoe()},
                                                                         {"dots1", dots1()}}) {
    try {
      EXPECT_EQ(parse(j).family_name(), name);
    } catch (const std::exception& e) {
      ADD_FAILURE() << name << ": " << e.what();
    }
  }
}

TEST(Config, Mixtral) {
  const ModelConfig c = parse(mixtral());
  EXPECT_EQ(c.family, Family::kMixtral);
  EXPECT_EQ(c.architecture, "MixtralForCausalLM");
  EXPECT_EQ(c.vocab_size, 320);
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.num_layers, 4);
  EXPECT_EQ(c.num_heads, 8);
  EXPECT_EQ(c.num_kv_heads, 2);
  EXPECT_EQ(c.head_dim, 8);  // hidden / heads
  EXPECT_EQ(c.q_width(), 64);
  EXPECT_EQ(c.kv_width(), 16);
  EXPECT_EQ(c.expert_intermediate_size, 96);
  EXPECT_EQ(c.shared_intermediate_size, 0);
  EXPECT_EQ(c.max_position_embeddings, 512);
  EXPECT_FLOAT_EQ(c.rms_norm_eps, 1e-5f);
  EXPECT_FLOAT_EQ(c.rope_theta, 1e6f);
  EXPECT_EQ(c.router.num_experts, 8);
  EXPECT_EQ(c.router.top_k, 2);
  EXPECT_EQ(c.router.score, moe::ScoreFunc::kSoftmax);
  EXPECT_TRUE(c.router.renormalize);
  EXPECT_FALSE(c.router.has_selection_bias);
  EXPECT_EQ(c.router.num_groups, 1);
  EXPECT_FLOAT_EQ(c.router.routed_scaling_factor, 1.0f);
  EXPECT_EQ(c.layer_is_moe, std::vector<bool>(4, true));
  EXPECT_EQ(c.qk_norm, QkNorm::kNone);
  EXPECT_EQ(c.bos_token_id, 1);
  EXPECT_EQ(c.eos_token_ids, std::vector<int32_t>{2});

  json j = mixtral();
  j.erase("num_key_value_heads");  // defaults to num_attention_heads (MHA)
  j["eos_token_id"] = {2, 7};
  const ModelConfig m = parse(j);
  EXPECT_EQ(m.num_kv_heads, 8);
  EXPECT_EQ(m.eos_token_ids, (std::vector<int32_t>{2, 7}));
}

// The Hugging Face rule, written independently of config.cpp.
std::vector<bool> qwen_moe_layers(int num_layers, const std::vector<int>& mlp_only, int step) {
  std::vector<bool> out;
  for (int i = 0; i < num_layers; ++i) {
    const bool listed = std::count(mlp_only.begin(), mlp_only.end(), i) > 0;
    out.push_back(!listed && (i + 1) % step == 0);
  }
  return out;
}

TEST(Config, Qwen2MoeLayerPattern) {
  struct Case {
    int num_layers;
    std::vector<int> mlp_only;
    int step;
  };
  const std::vector<Case> cases = {{4, {}, 1},     {6, {0, 3}, 1}, {6, {}, 2},
                                   {6, {0, 3}, 2}, {7, {5}, 3},    {3, {0, 1, 2}, 1}};
  for (const auto& k : cases) {
    json j = qwen2_moe();
    j["num_hidden_layers"] = k.num_layers;
    j["mlp_only_layers"] = k.mlp_only;
    j["decoder_sparse_step"] = k.step;
    const ModelConfig c = parse(j);
    EXPECT_EQ(c.layer_is_moe, qwen_moe_layers(k.num_layers, k.mlp_only, k.step))
        << "layers " << k.num_layers << ", mlp_only_layers " << json(k.mlp_only).dump()
        << ", decoder_sparse_step " << k.step;
  }
}

TEST(Config, Qwen2Moe) {
  const ModelConfig c = parse(qwen2_moe());
  EXPECT_EQ(c.family, Family::kQwen2Moe);
  EXPECT_EQ(c.router.num_experts, 6);
  EXPECT_EQ(c.router.top_k, 3);
  EXPECT_FALSE(c.router.renormalize);  // norm_topk_prob defaults to false
  EXPECT_EQ(c.expert_intermediate_size, 32);
  EXPECT_EQ(c.dense_intermediate_size, 128);
  EXPECT_EQ(c.shared_intermediate_size, 80);
  EXPECT_TRUE(c.shared_expert_gated);
  EXPECT_TRUE(c.qkv_bias);  // Qwen2 attention has q/k/v biases
  EXPECT_EQ(c.qk_norm, QkNorm::kNone);

  json j = qwen2_moe();
  j["norm_topk_prob"] = true;
  j.erase("shared_expert_intermediate_size");
  const ModelConfig r = parse(j);
  EXPECT_TRUE(r.router.renormalize);
  EXPECT_EQ(r.shared_intermediate_size, 0);
  EXPECT_FALSE(r.shared_expert_gated);
}

TEST(Config, Qwen3Moe) {
  const ModelConfig c = parse(qwen3_moe());
  EXPECT_EQ(c.family, Family::kQwen3Moe);
  EXPECT_TRUE(c.router.renormalize);  // norm_topk_prob defaults to true for Qwen3
  EXPECT_EQ(c.head_dim, 16);
  EXPECT_EQ(c.q_width(), 128);
  EXPECT_EQ(c.kv_width(), 32);
  EXPECT_EQ(c.qk_norm, QkNorm::kPerHead);
  EXPECT_FALSE(c.qkv_bias);
  EXPECT_EQ(c.shared_intermediate_size, 0);
  EXPECT_EQ(c.layer_is_moe, std::vector<bool>(4, true));

  json j = qwen3_moe();
  j["norm_topk_prob"] = false;
  EXPECT_FALSE(parse(j).router.renormalize);
}

TEST(Config, Olmoe) {
  const ModelConfig c = parse(olmoe());
  EXPECT_EQ(c.family, Family::kOlmoe);
  EXPECT_FALSE(c.router.renormalize);  // norm_topk_prob defaults to false
  EXPECT_EQ(c.router.score, moe::ScoreFunc::kSoftmax);
  EXPECT_EQ(c.expert_intermediate_size, 48);
  EXPECT_EQ(c.qk_norm, QkNorm::kFullWidth);
  EXPECT_EQ(c.clip_qkv, 0.0f);

  json j = olmoe();
  j["clip_qkv"] = 8.0;
  j["norm_topk_prob"] = true;
  const ModelConfig r = parse(j);
  EXPECT_FLOAT_EQ(r.clip_qkv, 8.0f);
  EXPECT_TRUE(r.router.renormalize);
}

TEST(Config, Dots1) {
  const ModelConfig c = parse(dots1());
  EXPECT_EQ(c.family, Family::kDots1);
  const auto& r = c.router;
  EXPECT_EQ(r.num_experts, 8);
  EXPECT_EQ(r.top_k, 2);
  EXPECT_EQ(r.score, moe::ScoreFunc::kSigmoid);
  EXPECT_TRUE(r.has_selection_bias);
  EXPECT_TRUE(r.renormalize);
  EXPECT_FLOAT_EQ(r.renormalize_epsilon, 1e-20f);
  EXPECT_FLOAT_EQ(r.routed_scaling_factor, 2.5f);
  EXPECT_EQ(r.num_groups, 4);
  EXPECT_EQ(r.topk_groups, 2);
  EXPECT_EQ(r.group_score, moe::GroupScore::kTop2Sum);
  EXPECT_EQ(c.expert_intermediate_size, 32);
  EXPECT_EQ(c.shared_intermediate_size, 64);  // n_shared_experts x moe_intermediate_size
  EXPECT_FALSE(c.shared_expert_gated);
  EXPECT_EQ(c.qk_norm, QkNorm::kPerHead);
  EXPECT_EQ(c.layer_is_moe, (std::vector<bool>{false, true, true, true}));

  for (int first_dense : {0, 2, 4}) {
    json j = dots1();
    j["first_k_dense_replace"] = first_dense;
    std::vector<bool> expected(4, true);
    for (int i = 0; i < first_dense; ++i) expected[size_t(i)] = false;
    EXPECT_EQ(parse(j).layer_is_moe, expected) << "first_k_dense_replace " << first_dense;
  }
}

TEST(Config, RejectionsNameOriginAndKey) {
  using Edit = std::function<void(json&)>;
  struct Case {
    const char* name;
    std::function<json()> base;
    Edit edit;
    std::vector<std::string> needles;  // besides the origin
  };
  const std::vector<Case> cases = {
      {"unknown architecture",
       mixtral,
       [](json& j) { j["architectures"] = {"LlamaForCausalLM"}; },
       {"LlamaForCausalLM"}},
      {"DeepSeek-V3 without its MLA keys",
       dots1,
       [](json& j) { j["architectures"] = {"DeepseekV3ForCausalLM"}; },
       {"kv_lora_rank", "missing"}},
      {"DeepSeek-V2 with an unknown topk_method",
       dots1,
       [](json& j) {
         j["architectures"] = {"DeepseekV2ForCausalLM"};
         j.update({{"kv_lora_rank", 32},
                   {"qk_nope_head_dim", 16},
                   {"qk_rope_head_dim", 8},
                   {"v_head_dim", 16},
                   {"topk_method", "noaux_tc"}});
       },
       {"topk_method", "noaux_tc"}},
      {"MLA with an odd rotary width",
       dots1,
       [](json& j) {
         j["architectures"] = {"DeepseekV3ForCausalLM"};
         j.update({{"kv_lora_rank", 32},
                   {"qk_nope_head_dim", 16},
                   {"qk_rope_head_dim", 7},
                   {"v_head_dim", 16}});
       },
       {"qk_rope_head_dim 7"}},
      {"partial_rotary_factor out of range",
       mixtral,
       [](json& j) { j["partial_rotary_factor"] = 1.5; },
       {"partial_rotary_factor", "1.5"}},
      {"Granite with a zero multiplier",
       mixtral,
       [](json& j) {
         j["architectures"] = {"GraniteMoeForCausalLM"};
         j["residual_multiplier"] = 0;
       },
       {"residual_multiplier"}},
      {"architectures missing",
       mixtral,
       [](json& j) { j.erase("architectures"); },
       {"architectures"}},
      {"architectures empty",
       mixtral,
       [](json& j) { j["architectures"] = json::array(); },
       {"architectures"}},
      {"vocab_size missing", mixtral, [](json& j) { j.erase("vocab_size"); }, {"'vocab_size'"}},
      {"hidden_size missing",
       qwen3_moe,
       [](json& j) { j.erase("hidden_size"); },
       {"'hidden_size'"}},
      {"num_hidden_layers missing",
       olmoe,
       [](json& j) { j.erase("num_hidden_layers"); },
       {"'num_hidden_layers'"}},
      {"num_attention_heads null",
       mixtral,
       [](json& j) { j["num_attention_heads"] = nullptr; },
       {"'num_attention_heads'"}},
      {"num_local_experts missing",
       mixtral,
       [](json& j) { j.erase("num_local_experts"); },
       {"'num_local_experts'"}},
      {"num_experts_per_tok missing",
       qwen2_moe,
       [](json& j) { j.erase("num_experts_per_tok"); },
       {"'num_experts_per_tok'"}},
      {"num_experts missing", olmoe, [](json& j) { j.erase("num_experts"); }, {"'num_experts'"}},
      {"moe_intermediate_size missing",
       qwen3_moe,
       [](json& j) { j.erase("moe_intermediate_size"); },
       {"'moe_intermediate_size'"}},
      {"Mixtral intermediate_size missing",
       mixtral,
       [](json& j) { j.erase("intermediate_size"); },
       {"'intermediate_size'"}},
      {"n_routed_experts missing",
       dots1,
       [](json& j) { j.erase("n_routed_experts"); },
       {"'n_routed_experts'"}},
      {"hidden_size is a string",
       mixtral,
       [](json& j) { j["hidden_size"] = "64"; },
       {"'hidden_size'"}},
      {"hidden_size is fractional",
       mixtral,
       [](json& j) { j["hidden_size"] = 64.5; },
       {"'hidden_size'"}},
      {"num_experts_per_tok is a bool",
       mixtral,
       [](json& j) { j["num_experts_per_tok"] = true; },
       {"'num_experts_per_tok'"}},
      {"norm_topk_prob is a string",
       qwen2_moe,
       [](json& j) { j["norm_topk_prob"] = "yes"; },
       {"'norm_topk_prob'"}},
      {"rms_norm_eps is a string",
       mixtral,
       [](json& j) { j["rms_norm_eps"] = "1e-5"; },
       {"'rms_norm_eps'"}},
      {"tie_word_embeddings is 1",
       mixtral,
       [](json& j) { j["tie_word_embeddings"] = 1; },
       {"'tie_word_embeddings'"}},
      {"mlp_only_layers holds a string",
       qwen2_moe,
       [](json& j) {
         j["mlp_only_layers"] = {0, "1"};
       },
       {"'mlp_only_layers'"}},
      {"heads do not divide hidden",
       mixtral,
       [](json& j) {
         j["num_attention_heads"] = 6;
         j["num_key_value_heads"] = 2;
       },
       {"64", "6"}},
      {"kv heads do not divide heads",
       mixtral,
       [](json& j) { j["num_key_value_heads"] = 3; },
       {"num_key_value_heads"}},
      {"odd head_dim", qwen3_moe, [](json& j) { j["head_dim"] = 15; }, {"head_dim"}},
      {"zero heads", mixtral, [](json& j) { j["num_attention_heads"] = 0; }, {"head"}},
      {"top-k > experts",
       mixtral,
       [](json& j) { j["num_experts_per_tok"] = 9; },
       {"num_experts_per_tok", "9", "8"}},
      {"top-k = 0", olmoe, [](json& j) { j["num_experts_per_tok"] = 0; }, {"num_experts_per_tok"}},
      {"zero experts", qwen3_moe, [](json& j) { j["num_experts"] = 0; }, {"experts"}},
      {"n_group does not divide experts",
       dots1,
       [](json& j) { j["n_group"] = 3; },
       {"n_group", "3", "8"}},
      {"topk_group > n_group", dots1, [](json& j) { j["topk_group"] = 5; }, {"topk_group"}},
      {"top-k beyond the selected groups",
       dots1,
       [](json& j) {
         j["n_group"] = 4;
         j["topk_group"] = 1;
         j["num_experts_per_tok"] = 3;
       },
       {"num_experts_per_tok"}},
      {"first_k_dense_replace > layers",
       dots1,
       [](json& j) { j["first_k_dense_replace"] = 5; },
       {"first_k_dense_replace"}},
      {"dense layers without intermediate_size",
       qwen2_moe,
       [](json& j) {
         j.erase("intermediate_size");
         j["mlp_only_layers"] = {1};
       },
       {"intermediate_size"}},
      {"decoder_sparse_step 0",
       qwen2_moe,
       [](json& j) { j["decoder_sparse_step"] = 0; },
       {"decoder_sparse_step"}},
      {"rope_scaling llama3 without original_max_position_embeddings",
       mixtral,
       [](json& j) {
         j["rope_scaling"] = {{"rope_type", "llama3"}, {"factor", 4.0}};
       },
       {"llama3", "rope_scaling"}},
      {"rope_parameters yarn without a factor",
       mixtral,
       [](json& j) {
         j["rope_parameters"] = {{"rope_type", "yarn"}, {"rope_theta", 1e4}};
       },
       {"YaRN", "factor"}},
      {"rope_parameters dynamic (not implemented)",
       mixtral,
       [](json& j) {
         j["rope_parameters"] = {{"rope_type", "dynamic"}, {"factor", 2.0}};
       },
       {"dynamic", "rope_parameters"}},
      {"GPT-OSS layer_types of the wrong length",
       mixtral,
       [](json& j) {
         j["architectures"] = {"GptOssForCausalLM"};
         j["sliding_window"] = 8;
         j["layer_types"] = {"sliding_attention"};
       },
       {"layer_types"}},
      {"hidden_act gelu", mixtral, [](json& j) { j["hidden_act"] = "gelu"; }, {"gelu"}},
      {"DBRX with an L2 norm of the router weights",
       dbrx,
       [](json& j) { j["ffn_config"]["moe_normalize_expert_weights"] = 2.0; },
       {"moe_normalize_expert_weights", "2"}},
      {"DBRX with gelu experts",
       dbrx,
       [](json& j) { j["ffn_config"]["ffn_act_fn"]["name"] = "gelu"; },
       {"ffn_act_fn", "gelu"}},
      {"DBRX without ffn_config", dbrx, [](json& j) { j.erase("ffn_config"); }, {"ffn_config"}},
      {"DBRX without d_model", dbrx, [](json& j) { j.erase("d_model"); }, {"hidden_size"}},
      {"Hunyuan with a different expert count per layer",
       hunyuan,
       [](json& j) {
         j["num_experts"] = {8, 8, 16, 8};
       },
       {"num_experts", "differs"}},
      {"Llama 4 no_rope_layers of the wrong length",
       llama4,
       [](json& j) {
         j["no_rope_layers"] = {1, 1, 0};
       },
       {"no_rope_layers", "8 layers"}},
      {"Llama 4 moe_layers past the last layer",
       llama4,
       [](json& j) {
         j["moe_layers"] = {1, 9};
       },
       {"moe_layers", "9"}},
      {"Llama 4 with an unknown layer type",
       llama4,
       [](json& j) {
         j["layer_types"] = json::array();
         for (int l = 0; l < 8; ++l) j["layer_types"].push_back("sliding_attention");
       },
       {"layer_types"}},
      {"longrope factors of the wrong length",
       mixtral,
       [](json& j) {
         j["rope_scaling"] = {{"type", "longrope"},
                              {"short_factor", {1.0, 1.0}},
                              {"long_factor", {2.0, 2.0}},
                              {"original_max_position_embeddings", 64}};
       },
       {"short_factor", "long_factor", "4 values"}},
      {"longrope without original_max_position_embeddings",
       mixtral,
       [](json& j) {
         j["rope_scaling"] = {{"type", "longrope"},
                              {"short_factor", {1.0, 1.0, 1.0, 1.0}},
                              {"long_factor", {2.0, 2.0, 2.0, 2.0}}};
       },
       {"longrope", "original_max_position_embeddings"}},
      {"llama3 RoPE with high_freq_factor below low_freq_factor",
       llama4,
       [](json& j) {
         j["rope_parameters"] = {{"rope_type", "llama3"},
                                 {"factor", 8.0},
                                 {"low_freq_factor", 4.0},
                                 {"high_freq_factor", 1.0},
                                 {"original_max_position_embeddings", 8192}};
       },
       {"llama3", "high_freq_factor"}},
  };
  for (const auto& k : cases) {
    json j = k.base();
    k.edit(j);
    auto needles = k.needles;
    needles.push_back(kOrigin);
    expect_rejected(j.dump(), needles, k.name);
  }
  expect_rejected("{\"architectures\": [\"MixtralForCausalLM\"", {kOrigin, "JSON"},
                  "truncated JSON");
  expect_rejected("[1, 2]", {kOrigin}, "JSON array");
}

// Counts are read as int64 and narrowed to int: 2^32 + 8 experts must be rejected, not
// silently become 8 (config.cpp casts k.integer(...) with int(...) and no range check).
TEST(Config, ExpertCountBeyondIntIsRejected) {
  for (const auto& [key, base] :
       std::vector<std::pair<const char*, std::function<json()>>>{{"num_local_experts", mixtral},
                                                                  {"num_experts", qwen3_moe},
                                                                  {"num_experts_per_tok", olmoe}}) {
    json j = base();
    j[key] = 4294967304LL;  // 2^32 + 8
    expect_rejected(j.dump(), {kOrigin, key}, std::string(key) + " = 2^32 + 8");
  }
}

// Hostile files (issue 22): sizes that would overflow or allocate absurdly, nesting that would
// recurse, and values too large to quote are refused with short messages.
TEST(Config, HostileValuesAreBoundedErrors) {
  struct Case {
    const char* key;
    json value;
    std::vector<std::string> needles;
  };
  const std::vector<Case> cases = {
      {"hidden_size", json(int64_t(1) << 40), {"implausible shape", "hidden_size"}},
      {"num_hidden_layers", json(int64_t(1) << 33), {"implausible shape", "num_hidden_layers"}},
      {"vocab_size", json(int64_t(1) << 50), {"implausible shape", "vocab_size"}},
      {"head_dim", json(int64_t(1) << 40), {"head_dim"}},
      {"head_dim", json(-8), {"head_dim"}},
      {"intermediate_size", json(int64_t(1) << 45), {"intermediate size"}},
      {"num_local_experts", json(100000), {"number of experts", "1 .. 65536"}},
      {"max_position_embeddings", json(0), {"max_position_embeddings 0"}},
      {"rms_norm_eps", json(-1.0), {"rms_norm_eps"}},
      {"rope_theta", json(0), {"rope_theta"}},
      {"eos_token_id", json(int64_t(1) << 40), {"eos_token_id", "vocab_size"}},
      {"bos_token_id", json(-7), {"bos_token_id -7"}},
  };
  for (const Case& c : cases) {
    json j = mixtral();
    j[c.key] = c.value;
    expect_rejected(j.dump(), c.needles, std::string(c.key) + " = " + c.value.dump());
  }
  // 10k nested arrays: refused while parsing, not by recursing through them.
  json j = mixtral();
  const std::string deep = std::string(10000, '[') + std::string(10000, ']');
  std::string text = j.dump();
  text.insert(text.size() - 1, ", \"deep\": " + deep);
  expect_rejected(text, {"nests deeper than 64"}, "deep nesting");
  // A huge value under a typed key is described, not dumped into the message.
  json big = mixtral();
  big["rms_norm_eps"] = json::array();
  for (int i = 0; i < 100000; ++i) big["rms_norm_eps"].push_back(i);
  try {
    parse(big);
    ADD_FAILURE() << "an array rms_norm_eps was accepted";
  } catch (const Error& e) {
    EXPECT_LT(std::string(e.what()).size(), 300u) << e.what();
    EXPECT_NE(std::string(e.what()).find("an array of 100000"), std::string::npos) << e.what();
  }
}

TEST(Config, AcceptedVariants) {
  // Keys that change nothing must not be rejected; present-but-default rope settings pass.
  json j = mixtral();
  j["rope_scaling"] = nullptr;
  j["rope_parameters"] = {{"rope_type", "default"}, {"rope_theta", 5e5}};
  j["head_dim"] = nullptr;
  const ModelConfig c = parse(j);
  EXPECT_FLOAT_EQ(c.rope_theta, 5e5f);  // rope_parameters wins over the legacy key
  EXPECT_EQ(c.head_dim, 8);
}

TEST(Config, LoadConfigFromDirectory) {
  namespace fs = std::filesystem;
  const fs::path dir = fs::temp_directory_path() / ("sy_config_test_" + std::to_string(::getpid()));
  fs::create_directories(dir);
  try {
    load_config(dir.string());
    ADD_FAILURE() << "a directory without config.json was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find(dir.string()), std::string::npos) << e.what();
  }
  {
    std::ofstream out(dir / "config.json");
    json j = olmoe();
    j["num_experts_per_tok"] = 9;
    out << j.dump();
  }
  try {
    load_config(dir.string());
    ADD_FAILURE() << "an invalid config.json was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find((dir / "config.json").string()), std::string::npos)
        << e.what();
  }
  fs::remove_all(dir);
}

}  // namespace
}  // namespace sy::model
