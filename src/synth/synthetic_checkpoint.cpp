#include "synth/synthetic_checkpoint.h"

#include <cmath>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/family.h"
#include "model/tensor_names.h"
#include "synth/tiny_tokenizer.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/memory.h"
#include "util/splitmix64.h"

namespace sy::synth {
namespace {

using json = nlohmann::json;

enum class Init { kMatrix, kEmbedding, kNorm, kBias };

struct PlannedTensor {
  std::string name;
  std::vector<int64_t> shape;
  Init init;
  int shard;
  bool force_f32 = false;  // e.g. DeepSeek's e_score_correction_bias stays float32
  int64_t fan_in = 0;      // kMatrix: 0 = the last dimension (x @ W^T layouts)
};

// Counter-based generator: value i of tensor t depends only on (seed, t, i), so tensors
// can be filled in parallel and reproducibly.
inline float uniform_pm1(uint64_t seed, uint64_t i) {  // uniform in [-1, 1)
  return float(int64_t(splitmix64(seed ^ splitmix64(i)) >> 11) * (2.0 / 9007199254740992.0) - 1.0);
}

using model::Family;

// The tensors of a checkpoint, planned from its config as the loader reads it (so the names and
// shapes are model/'s: tensor_names.h, the family table), sharded by layer.
class Planner {
 public:
  Planner(const model::ModelConfig& c, const SyntheticSpec& s) : c_(c), s_(s) {}
  std::vector<PlannedTensor> plan() {
    if (c_.family == Family::kDbrx) return plan_dbrx();
    const int64_t H = c_.hidden_size, V = c_.vocab_size, hd = c_.head_dim;
    const int64_t qw = c_.q_width(), kvw = c_.kv_width();
    const bool norm_bias = c_.layer_norm && c_.norm_bias;  // Phi-3.5-MoE's LayerNorms
    add("model.embed_tokens.weight", {V, H}, Init::kEmbedding, 0);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      const int shard = int(l * s_.num_shards / std::max<int64_t>(1, c_.num_layers));
      const std::string p = model::layer_prefix(l);
      add(p + "input_layernorm.weight", {H}, Init::kNorm, shard);
      add(p + "post_attention_layernorm.weight", {H}, Init::kNorm, shard);
      if (norm_bias) {
        add(p + "input_layernorm.bias", {H}, Init::kBias, shard);
        add(p + "post_attention_layernorm.bias", {H}, Init::kBias, shard);
      }
      const std::string a = p + "self_attn.";
      if (c_.attention_sinks) add(a + "sinks", {c_.num_heads}, Init::kBias, shard);
      if (c_.mla.enabled()) {
        mla(a, shard);
      } else {
        add(a + "q_proj.weight", {qw, H}, Init::kMatrix, shard);
        add(a + "k_proj.weight", {kvw, H}, Init::kMatrix, shard);
        add(a + "v_proj.weight", {kvw, H}, Init::kMatrix, shard);
        add(a + "o_proj.weight", {H, qw}, Init::kMatrix, shard);
        if (c_.qkv_bias) {
          add(a + "q_proj.bias", {qw}, Init::kBias, shard);
          add(a + "k_proj.bias", {kvw}, Init::kBias, shard);
          add(a + "v_proj.bias", {kvw}, Init::kBias, shard);
        }
        if (c_.o_bias) add(a + "o_proj.bias", {H}, Init::kBias, shard);
        if (c_.qk_norm != model::QkNorm::kNone && c_.qk_norm != model::QkNorm::kL2AfterRope) {
          const model::FamilyInfo& f = model::family_info(c_.family);
          const bool full = c_.qk_norm == model::QkNorm::kFullWidth;
          add(a + std::string(f.q_norm), {full ? qw : hd}, Init::kNorm, shard);
          add(a + std::string(f.k_norm), {full ? kvw : hd}, Init::kNorm, shard);
        }
      }
      if (!c_.layer_is_moe[size_t(l)]) {
        ffn(model::dense_ffn_names(c_, l), c_.dense_intermediate_size, shard);
        continue;
      }
      const std::string m = model::moe_prefix(c_, l);
      const int64_t E = c_.router.num_experts, I = c_.expert_intermediate_size;
      const model::FamilyInfo& f = model::family_info(c_.family);
      add(m + std::string(f.router_weight), {E, H}, Init::kMatrix, shard);
      if (c_.router.has_selection_bias) {
        const std::vector<int64_t> shape =
            f.selection_bias_2d ? std::vector<int64_t>{1, E} : std::vector<int64_t>{E};
        add(m + std::string(f.selection_bias), shape, Init::kBias, shard, true);
      }
      if (c_.router_bias) add(m + "router.bias", {E}, Init::kBias, shard);
      if (c_.family == Family::kGptOss || c_.family == Family::kLlama4) {
        // x @ W layouts: gate_up [E, H, 2I] (GPT-OSS interleaves gate and up columns), down
        // [E, I, H]; GPT-OSS's experts have biases.
        add(m + "experts.gate_up_proj", {E, H, 2 * I}, Init::kMatrix, shard, false, H);
        add(m + "experts.down_proj", {E, I, H}, Init::kMatrix, shard, false, I);
        if (c_.family == Family::kGptOss) {
          add(m + "experts.gate_up_proj_bias", {E, 2 * I}, Init::kBias, shard);
          add(m + "experts.down_proj_bias", {E, H}, Init::kBias, shard);
        }
      } else if (s_.fused_experts || f.expert_gate.empty()) {  // transformers v5's (Granite's)
        add(m + std::string(f.fused_gate_up), {E, 2 * I, H}, Init::kMatrix, shard);
        add(m + std::string(f.fused_down), {E, H, I}, Init::kMatrix, shard);
      } else {
        for (int64_t e = 0; e < E; ++e) ffn(model::expert_names(c_, l, e), I, shard);
      }
      if (c_.shared_intermediate_size > 0) {
        ffn(model::shared_expert_names(c_, l), c_.shared_intermediate_size, shard);
        if (c_.shared_expert_gated)
          add(m + "shared_expert_gate.weight", {1, H}, Init::kMatrix, shard);
        if (c_.branch_softmax_gate) add(m + "combine_gate.weight", {2, H}, Init::kMatrix, shard);
      }
      if (c_.shortcut != model::Shortcut::kNone)
        add(p + "shortcut_layernorm.weight", {H}, Init::kNorm, shard);
    }
    const int last = std::max(0, s_.num_shards - 1);
    add("model.norm.weight", {H}, Init::kNorm, last);
    if (norm_bias) add("model.norm.bias", {H}, Init::kBias, last);
    if (!c_.tie_word_embeddings) add("lm_head.weight", {V, H}, Init::kMatrix, last);
    return std::move(out_);
  }

 private:
  // DBRX's own names and fused tensors (model/dbrx_checkpoint.h).
  std::vector<PlannedTensor> plan_dbrx() {
    const int64_t H = c_.hidden_size, V = c_.vocab_size, qw = c_.q_width(), kvw = c_.kv_width();
    const int64_t E = c_.router.num_experts, I = c_.expert_intermediate_size;
    add("transformer.wte.weight", {V, H}, Init::kEmbedding, 0);
    for (int64_t l = 0; l < c_.num_layers; ++l) {
      const int shard = int(l * s_.num_shards / std::max<int64_t>(1, c_.num_layers));
      const std::string b = fmt::format("transformer.blocks.{}.", l);
      add(b + "norm_attn_norm.norm_1.weight", {H}, Init::kNorm, shard);
      add(b + "norm_attn_norm.norm_2.weight", {H}, Init::kNorm, shard);
      add(b + "norm_attn_norm.attn.Wqkv.weight", {qw + 2 * kvw, H}, Init::kMatrix, shard);
      add(b + "norm_attn_norm.attn.out_proj.weight", {H, qw}, Init::kMatrix, shard);
      add(b + "ffn.router.layer.weight", {E, H}, Init::kMatrix, shard);
      add(b + "ffn.experts.mlp.w1", {E * I, H}, Init::kMatrix, shard);
      add(b + "ffn.experts.mlp.v1", {E * I, H}, Init::kMatrix, shard);
      add(b + "ffn.experts.mlp.w2", {E * I, H}, Init::kMatrix, shard, false, I);
    }
    const int last = std::max(0, s_.num_shards - 1);
    add("transformer.norm_f.weight", {H}, Init::kNorm, last);
    if (!c_.tie_word_embeddings) add("lm_head.weight", {V, H}, Init::kMatrix, last);
    return std::move(out_);
  }
  void add(std::string name, std::vector<int64_t> shape, Init init, int shard, bool f32 = false,
           int64_t fan_in = 0) {
    out_.push_back({std::move(name), std::move(shape), init, shard, f32, fan_in});
  }
  void mla(const std::string& a, int shard) {  // model/mla_attention.h's tensors
    const model::MlaConfig& m = c_.mla;
    const int64_t H = c_.hidden_size, nh = c_.num_heads, qw = nh * m.qk_head_dim();
    if (m.q_lora_rank > 0) {
      add(a + "q_a_proj.weight", {m.q_lora_rank, H}, Init::kMatrix, shard);
      add(a + "q_a_layernorm.weight", {m.q_lora_rank}, Init::kNorm, shard);
      add(a + "q_b_proj.weight", {qw, m.q_lora_rank}, Init::kMatrix, shard);
    } else {
      add(a + "q_proj.weight", {qw, H}, Init::kMatrix, shard);
    }
    add(a + "kv_a_proj_with_mqa.weight", {m.latent_width(), H}, Init::kMatrix, shard);
    add(a + "kv_a_layernorm.weight", {m.kv_lora_rank}, Init::kNorm, shard);
    add(a + "kv_b_proj.weight", {nh * (m.qk_nope_dim + m.v_head_dim), m.kv_lora_rank},
        Init::kMatrix, shard);
    add(a + "o_proj.weight", {H, nh * m.v_head_dim}, Init::kMatrix, shard);
  }
  void ffn(const model::FfnNames& n, int64_t I, int shard) {
    const int64_t H = c_.hidden_size;
    add(n.gate, {I, H}, Init::kMatrix, shard);
    add(n.up, {I, H}, Init::kMatrix, shard);
    add(n.down, {H, I}, Init::kMatrix, shard);
  }
  const model::ModelConfig& c_;
  const SyntheticSpec& s_;
  std::vector<PlannedTensor> out_;
};

// Fills a tensor: matrices uniform with std 1/sqrt(fan_in) (unit-variance activations),
// embeddings std 1, norm weights 1 +- 0.25 (so a missed norm shows), biases +- 0.1.
std::vector<uint8_t> generate(const PlannedTensor& t, const std::string& dtype, uint64_t seed) {
  int64_t n = 1;
  for (int64_t d : t.shape) n *= d;
  float scale = 0.1f, offset = 0.0f;
  if (t.init == Init::kMatrix)
    scale = std::sqrt(3.0f / float(t.fan_in > 0 ? t.fan_in : t.shape.back()));
  if (t.init == Init::kEmbedding) scale = std::sqrt(3.0f);
  if (t.init == Init::kNorm) scale = 0.25f, offset = 1.0f;
  const std::string dt = t.force_f32 ? "F32" : dtype;
  std::vector<uint8_t> bytes(size_t(n) * (dt == "F32" ? 4 : 2));
  const uint64_t tseed = splitmix64(seed ^ std::hash<std::string>{}(t.name));
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const float v = offset + scale * uniform_pm1(tseed, uint64_t(i));
    if (dt == "F32")
      reinterpret_cast<float*>(bytes.data())[i] = v;
    else if (dt == "BF16")
      reinterpret_cast<uint16_t*>(bytes.data())[i] = f32_to_bf16(v);
    else
      reinterpret_cast<uint16_t*>(bytes.data())[i] = f32_to_f16(v);
  }
  return bytes;
}

model::FamilyShape family_shape(const SyntheticSpec& s) {
  model::FamilyShape shape;
  shape.num_experts = s.num_experts;
  shape.top_k = s.top_k;
  shape.expert_ffn = s.expert_ffn;
  shape.dense_ffn = s.dense_ffn;
  shape.shared_ffn = s.shared_ffn;
  shape.first_dense_layers = s.first_dense_layers;
  shape.num_groups = s.num_groups;
  shape.topk_groups = s.topk_groups;
  shape.routed_scaling_factor = s.routed_scaling_factor;
  shape.norm_topk_prob = s.norm_topk_prob;
  shape.clip_qkv = s.clip_qkv;
  shape.sparse_step = s.sparse_step;
  shape.shortcut = s.scmoe_shortcut;
  shape.combine = s.scmoe_combine;
  return shape;
}

json make_config(const SyntheticSpec& s, int64_t head_dim, int32_t bos, int32_t eos) {
  static const std::map<std::string, std::string> torch_dtype = {
      {"F32", "float32"}, {"F16", "float16"}, {"BF16", "bfloat16"}};
  const model::FamilyInfo& fam = model::family_info(s.family);
  json c = {{"architectures", {std::string(fam.architecture)}},
            {"model_type", std::string(fam.name)},
            {"vocab_size", s.vocab_size},
            {"hidden_size", s.hidden_size},
            {"num_hidden_layers", s.num_layers},
            {"num_attention_heads", s.num_heads},
            {"num_key_value_heads", s.num_kv_heads},
            {"head_dim", head_dim},
            {"hidden_act", "silu"},
            {"max_position_embeddings", 4096},
            {"rms_norm_eps", 1e-6},
            {"rope_theta", 10000.0},
            {"tie_word_embeddings", s.tie_embeddings},
            {"torch_dtype", torch_dtype.at(s.dtype)},
            {"num_experts_per_tok", s.top_k},
            {"bos_token_id", bos},
            {"eos_token_id", eos}};
  fam.write_config(family_shape(s), c);
  return c;
}

void validate(const SyntheticSpec& s) {
  json family_keys;  // the family's own constraints (e.g. no dense layers), before any file
  model::family_info(s.family).write_config(family_shape(s), family_keys);
  if (s.dtype != "F32" && s.dtype != "F16" && s.dtype != "BF16")
    fail("dtype '{}' must be F32, F16 or BF16", s.dtype);
  if (s.hidden_size <= 0 || s.num_layers <= 0 || s.num_heads <= 0 || s.num_kv_heads <= 0 ||
      s.num_heads % s.num_kv_heads != 0)
    fail("invalid attention shape: hidden {}, heads {}, kv heads {}", s.hidden_size, s.num_heads,
         s.num_kv_heads);
  if (s.head_dim == 0 && s.hidden_size % s.num_heads != 0)
    fail("hidden_size {} is not divisible by {} heads; give --head-dim", s.hidden_size,
         s.num_heads);
  if (s.top_k < 1 || s.top_k > s.num_experts)
    fail("top-k {} must be in 1..{}", s.top_k, s.num_experts);
  if (s.num_shards < 1) fail("num_shards must be >= 1");
  if (s.vocab_size < 0) fail("vocab size must be positive (or 0 for the tokenizer's size)");
  if (s.num_groups < 1 || s.num_experts % s.num_groups != 0 || s.topk_groups < 1 ||
      s.topk_groups > s.num_groups)
    fail("--groups must divide the experts and --topk-groups must be in 1..groups");
}

}  // namespace

std::vector<std::string> write_synthetic_checkpoint(const SyntheticSpec& requested,
                                                    const std::string& dir) {
  SyntheticSpec spec = requested;
  validate(spec);
  std::filesystem::create_directories(dir);
  std::vector<std::string> written;

  // Tokenizer first: its special token ids go into config.json.
  TinyTokenizer tok;
  std::string style = spec.tokenizer;
  if (style == "auto") style = spec.family == Family::kMixtral ? "sentencepiece" : "byte_level";
  if (style != "none") {
    tok = make_tiny_tokenizer(style, spec.vocab_size > 0 ? spec.vocab_size : 4096);
    if (spec.vocab_size == 0) spec.vocab_size = tok.vocab_size;
    io::write_text_file_atomic(dir + "/tokenizer.json", tok.json);
    written.push_back(dir + "/tokenizer.json");
  }
  if (spec.vocab_size == 0) spec.vocab_size = 512;

  const int64_t head_dim = spec.head_dim ? spec.head_dim : spec.hidden_size / spec.num_heads;
  const json config = make_config(spec, head_dim, tok.bos_id, tok.eos_id);
  // Planned from the config as the loader parses it: one source for names and shapes.
  const model::ModelConfig parsed = model::parse_config(config.dump(), dir + "/config.json");
  std::vector<PlannedTensor> plan = Planner(parsed, spec).plan();
  uint64_t bytes = 0;
  for (const auto& t : plan) {
    uint64_t n = 1;
    for (int64_t d : t.shape) n = checked_mul(n, uint64_t(d), "tensor " + t.name);
    bytes += checked_mul(n, 4, "tensor " + t.name);
  }
  require_memory(bytes, fmt::format("the synthetic checkpoint's {} tensors", plan.size()));
  std::vector<std::vector<uint8_t>> data;
  data.reserve(plan.size());
  for (const auto& t : plan) data.push_back(generate(t, spec.dtype, spec.seed));

  auto file_name = [&](int shard) {
    return spec.num_shards == 1
               ? std::string("model.safetensors")
               : fmt::format("model-{:05d}-of-{:05d}.safetensors", shard + 1, spec.num_shards);
  };
  json weight_map = json::object();
  size_t total = 0;
  for (int shard = 0; shard < spec.num_shards; ++shard) {
    std::vector<io::TensorToWrite> tensors;
    for (size_t i = 0; i < plan.size(); ++i) {
      if (plan[i].shard != shard) continue;
      const std::string dt = plan[i].force_f32 ? "F32" : spec.dtype;
      tensors.push_back({plan[i].name, dt, plan[i].shape, data[i].data(), data[i].size()});
      weight_map[plan[i].name] = file_name(shard);
      total += data[i].size();
    }
    io::write_safetensors(dir + "/" + file_name(shard), tensors);
    written.push_back(dir + "/" + file_name(shard));
  }
  if (spec.num_shards > 1) {
    json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
    io::write_text_file_atomic(dir + "/model.safetensors.index.json", index.dump(2));
    written.push_back(dir + "/model.safetensors.index.json");
  }
  io::write_text_file_atomic(dir + "/config.json", config.dump(2) + "\n");
  written.push_back(dir + "/config.json");
  return written;
}

SyntheticLayout synthetic_layout(const SyntheticSpec& requested) {
  SyntheticSpec spec = requested;
  validate(spec);
  if (spec.tokenizer != "none" || spec.vocab_size <= 0)
    fail("synthetic_layout needs tokenizer 'none' and a vocabulary size");
  const int64_t head_dim = spec.head_dim ? spec.head_dim : spec.hidden_size / spec.num_heads;
  SyntheticLayout out;
  out.config_json = make_config(spec, head_dim, -1, -1).dump(2) + "\n";
  const model::ModelConfig parsed = model::parse_config(out.config_json, "synthetic config.json");
  for (auto& t : Planner(parsed, spec).plan()) out.tensors.emplace_back(t.name, t.shape);
  return out;
}

SyntheticSpec reference_shape(const std::string& name) {
  SyntheticSpec s;
  s.vocab_size = 32000;
  if (name == "A") {
    s.family = Family::kMixtral;
    s.hidden_size = 1024, s.num_layers = 8, s.num_heads = 16, s.num_kv_heads = 4;
    s.num_experts = 8, s.top_k = 2, s.expert_ffn = 2816;
  } else if (name == "B") {
    s.family = Family::kOlmoe;
    s.hidden_size = 2048, s.num_layers = 16, s.num_heads = 16, s.num_kv_heads = 16;
    s.num_experts = 16, s.top_k = 2, s.expert_ffn = 1408;
  } else {
    fail("unknown reference shape '{}' (expected A or B)", name);
  }
  return s;
}

}  // namespace sy::synth
