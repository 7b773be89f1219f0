// The model's shape and math, read once from a Hugging Face config.json. Each family's
// config keys are mapped onto one struct so the forward pass has no per-family branches
// beyond the handful of flags below.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "moe/router.h"

namespace sy::model {

enum class Family : uint8_t {
  kMixtral,
  kQwen2Moe,
  kQwen3Moe,
  kOlmoe,
  kDots1,
  kScMoe,
  kGlm4Moe,
  kGraniteMoe,
  kDeepseekV2,
  kDeepseekV3,
  kGptOss,
  kErnie45Moe,
  kPhimoe,
  kHunyuanMoe,
  kDbrx,
  kLlama4
};

// Multi-head latent attention (DeepSeek-V2/V3, Kimi K2): keys and values come from a compressed
// latent c = RMSNorm(x W_DKV) of kv_lora_rank values per token plus one shared rotary key of
// qk_rope_dim values; the KV cache holds only those. Queries come from x directly or through a
// low-rank q_lora_rank bottleneck.
struct MlaConfig {
  int64_t q_lora_rank = 0;  // 0: q_proj straight from x
  int64_t kv_lora_rank = 0;
  int64_t qk_nope_dim = 0, qk_rope_dim = 0, v_head_dim = 0;
  bool interleaved_rope = true;  // RoPE on pairs (2i, 2i+1) (V2; V3 rope_interleave), else halves
  bool enabled() const { return kv_lora_rank > 0; }
  int64_t qk_head_dim() const { return qk_nope_dim + qk_rope_dim; }
  int64_t latent_width() const { return kv_lora_rank + qk_rope_dim; }  // cached per token
};

// How q and k are normalised.
enum class QkNorm : uint8_t {
  kNone,
  kPerHead,           // RMSNorm over each head's head_dim values, before RoPE (Qwen3-MoE, dots)
  kFullWidth,         // RMSNorm over the whole q / k projection, before RoPE (OLMoE)
  kPerHeadAfterRope,  // RMSNorm over each head, after RoPE (Hunyuan-MoE)
  kL2AfterRope        // RMSNorm without weight over each head, after RoPE, only in the layers
                      // that rotate (Llama 4's L2Norm)
};

// ScMoE (docs/scmoe.md): where an MoE layer's routed branch reads the residual stream from.
enum class Shortcut : uint8_t {
  kNone,  // the layer's own post-attention stream, like any MoE
  kPos1,  // the preceding layer's output (this layer's input)
  kPos2,  // the preceding layer's stream after its attention, before its MLP
  kPos3,  // the preceding layer's input
};

// YaRN context extension (transformers' "yarn" rope type; GPT-OSS, DeepSeek-V3 long-context).
struct RopeScaling {
  bool yarn = false;
  double factor = 1.0;
  double original_max_positions = 0;  // the pretraining context (0: max_position_embeddings)
  double beta_fast = 32, beta_slow = 1;
  bool truncate = true;
  double attention_factor = 0;  // 0: from factor and the mscales
  double mscale = 0, mscale_all_dim = 0;
  // Llama 3's frequency-dependent scaling ("llama3" rope type; Llama 4): wavelengths longer
  // than original / low_freq_factor are divided by factor, shorter than original /
  // high_freq_factor kept, a smooth blend between.
  bool llama3 = false;
  double low_freq_factor = 1, high_freq_factor = 4;
  // LongRoPE ("longrope"; Phi-3.5-MoE): per-frequency divisors, short_factor while a forward's
  // positions stay within original_max_positions, long_factor (for every position) beyond it;
  // cos and sin times short_mscale / long_mscale (Phi's keys), else attention_factor, else
  // sqrt(1 + ln(max_position_embeddings / original) / ln(original)).
  bool longrope = false;
  std::vector<float> short_factor, long_factor;  // [rope_dim / 2]
  double short_mscale = 0, long_mscale = 0;
};

struct ModelConfig {
  std::string architecture;  // as in config.json, e.g. "MixtralForCausalLM"
  Family family = Family::kMixtral;
  int64_t vocab_size = 0;
  int64_t hidden_size = 0;
  int64_t num_layers = 0;
  int64_t num_heads = 0;
  int64_t num_kv_heads = 0;
  int64_t head_dim = 0;
  int64_t dense_intermediate_size = 0;   // FFN width of dense (non-MoE) layers
  int64_t expert_intermediate_size = 0;  // FFN width of one routed expert
  int64_t shared_intermediate_size = 0;  // total width of the shared expert(s); 0 = none
  bool shared_expert_gated = false;      // Qwen2-MoE, ScMoE CG-1: sigmoid(gate . x) * shared(x)
  bool branch_softmax_gate = false;      // ScMoE CG-2: softmax(C x) weighs shared and routed
  Shortcut shortcut = Shortcut::kNone;   // ScMoE: the routed branch's input (MoE layers)
  // Written by `switchyard partition` ("expert_partition" in config.json): each original expert
  // is experts [e * P, (e + 1) * P) (router.sub_experts = P; router.expand_parts for the
  // partial transformation); with reconstruction the first of them holds its most important
  // neurons (the major part that 2T-Drop runs alone).
  bool partition_reconstructed = false;
  int64_t max_position_embeddings = 0;
  float rms_norm_eps = 1e-6f;
  float rope_theta = 10000.0f;
  RopeScaling rope_scaling;
  // Sliding-window attention per layer: a query sees its last layer_window[l] positions
  // (0: all). Empty: no layer slides.
  std::vector<int64_t> layer_window;
  // Chunked attention per layer (Llama 4): a query sees the positions of its own chunk of
  // layer_chunk[l] (those from floor(pos / chunk) * chunk on). Empty or 0: not chunked.
  std::vector<int64_t> layer_chunk;
  // Layers without RoPE (Llama 4's NoPE layers); empty: every layer rotates. In them, with
  // attn_temperature_scale > 0, queries at position p are scaled by
  // 1 + attn_temperature_scale * ln(floor((p + 1) / attn_floor_scale) + 1).
  std::vector<bool> layer_nope;
  float attn_temperature_scale = 0.0f, attn_floor_scale = 1.0f;
  // Llama 4: the router's weight scales the expert's input (expert(w x)), not its output.
  bool expert_input_scaled = false;
  bool attention_sinks = false;   // GPT-OSS: a learned per-head logit joins each softmax
  bool router_bias = false;       // GPT-OSS: the router's linear layer has a bias
  bool rope_interleaved = false;  // RoPE on pairs (2i, 2i+1) (ERNIE-4.5), not NeoX halves
  bool layer_norm = false;        // LayerNorm instead of RMSNorm (Phi-3.5-MoE, DBRX; eps as given)
  bool norm_bias = true;          // with layer_norm: the norms have biases (DBRX's have none)
  float swiglu_limit = 0.0f;      // GPT-OSS's clamped SwiGLU (experts with biases) when > 0
  // Partial rotary (GLM-4.5: partial_rotary_factor 0.5): RoPE turns the first rotary_dim values
  // of each head (NeoX halves within them) and passes the rest through. 0: the whole head.
  int64_t rotary_dim = 0;
  // Granite's multipliers: the embeddings times embedding_multiplier, each block's output
  // times residual_multiplier before the residual add, attention scores times
  // attention_multiplier (0: 1 / sqrt(head_dim)), logits divided by logits_scaling.
  float embedding_multiplier = 1.0f, residual_multiplier = 1.0f;
  float attention_multiplier = 0.0f, logits_scaling = 1.0f;
  bool qkv_bias = false;
  bool o_bias = false;  // attention_bias also covers o_proj (Qwen3-MoE, OLMoE, dots.llm1)
  QkNorm qk_norm = QkNorm::kNone;
  MlaConfig mla;  // enabled(): the layers' attention is MLA (the q/k/v widths above are unused)
  float clip_qkv = 0.0f;  // OLMoE: clamp q, k, v to +-clip_qkv when > 0
  bool tie_word_embeddings = false;
  moe::RouterConfig router;
  std::vector<bool> layer_is_moe;  // [num_layers]
  std::vector<int32_t> eos_token_ids;
  int32_t bos_token_id = -1;

  int64_t q_width() const { return num_heads * head_dim; }
  int64_t kv_width() const { return num_kv_heads * head_dim; }
  // Floats one token occupies in one layer's KV cache: keys and values, or MLA's latent.
  int64_t cache_key_width() const { return mla.enabled() ? mla.latent_width() : kv_width(); }
  int64_t cache_value_width() const { return mla.enabled() ? 0 : kv_width(); }
  int64_t rope_dim() const { return rotary_dim > 0 ? rotary_dim : head_dim; }
  float attention_scale() const;  // attention_multiplier, or 1 / sqrt(head_dim)
  // Whether a multiplier or partial rotary is set (what the trainer does not implement yet).
  int64_t window(int64_t layer) const {
    return layer_window.empty() ? 0 : layer_window[size_t(layer)];
  }
  int64_t chunk(int64_t layer) const {
    return layer_chunk.empty() ? 0 : layer_chunk[size_t(layer)];
  }
  bool rotates(int64_t layer) const { return layer_nope.empty() || !layer_nope[size_t(layer)]; }
  bool has_scaled_stream() const {
    return embedding_multiplier != 1.0f || residual_multiplier != 1.0f ||
           attention_multiplier != 0.0f || logits_scaling != 1.0f;
  }
  std::string family_name() const;
  // The residual-stream point the routed branch of MoE layer `layer` reads: 2l is layer l's
  // input, 2l + 1 its stream after attention (kNone: 2 * layer + 1).
  int64_t shortcut_point(int64_t layer) const;
};

// "none" | "pos1" | "pos2" | "pos3" and back; sy::Error naming `origin` when unknown.
Shortcut parse_shortcut(const std::string& name, const std::string& origin);
const char* shortcut_name(Shortcut shortcut);

// Parses dir/config.json; throws sy::Error naming the file and key on anything missing,
// mistyped, inconsistent (e.g. heads not dividing) or unsupported (e.g. MLA attention).
ModelConfig load_config(const std::string& model_dir);
ModelConfig parse_config(const std::string& json_text, const std::string& origin);

}  // namespace sy::model
