#include "model/gguf_export.h"

#include <filesystem>
#include <nlohmann/json.hpp>
#include <vector>

#include "io/file_util.h"
#include "io/gguf.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/gguf_vocab.h"
#include "model/tensor_names.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/quant_blocks.h"

namespace sy::model {
namespace {

const char* arch_name(const ModelConfig& c) {
  switch (c.family) {
    case Family::kMixtral:
      return "llama";
    case Family::kQwen2Moe:
      return "qwen2moe";
    case Family::kQwen3Moe:
      return "qwen3moe";
    case Family::kOlmoe:
      return "olmoe";
    default:
      fail("GGUF export supports Mixtral, Qwen2-MoE, Qwen3-MoE and OLMoE models, not {}",
           c.family_name());
  }
}

bool is_quantized(GgmlType t) {
  return t != GgmlType::F32 && t != GgmlType::F16 && t != GgmlType::BF16;
}

// llama.cpp's Q4_K_M rule for attn_v and ffn_down (llama-quant.cpp's use_more_bits): Q6_K in
// the first and last eighth of the layers and every third layer between, Q4_K elsewhere.
bool use_more_bits(int64_t layer, int64_t layers) {
  return layer < layers / 8 || layer >= 7 * layers / 8 || (layer - layers / 8) % 3 == 2;
}

// The layer of a "blk.N." tensor name, or -1.
int64_t layer_of(const std::string& name) {
  if (name.rfind("blk.", 0) != 0) return -1;
  return std::stoll(name.substr(4, name.find('.', 4) - 4));
}

// The inverse of gguf_checkpoint.cpp's unpermuted_row: HF row r is stored at row `stored`.
int64_t permuted_row(int64_t r, int64_t rows, int64_t heads) {
  const int64_t per_head = rows / heads, half = per_head / 2;
  const int64_t h = r / per_head, i = r % per_head;
  const int64_t pair = i / half, j = i % half;
  return h * per_head + j * 2 + pair;
}

class Writer {
 public:
  Writer(const io::TensorStore& store, const GgufExportType& type, int64_t layers)
      : store_(store), type_(type), layers_(layers) {}

  // The type a quantizable tensor is stored in: the export type (a mix: per llama.cpp's rule),
  // or the nearest smaller-block type when its rows do not hold whole blocks.
  GgmlType type_for(const std::string& name, int64_t cols) const {
    GgmlType t = type_.base;
    if (type_.mix == GgufExportType::Mix::kMxfp4Moe && name.find("_exps.") == std::string::npos)
      t = GgmlType::Q8_0;
    if (type_.mix == GgufExportType::Mix::kQ4KM) {
      const bool more =
          name.find("attn_v.") != std::string::npos || name.find("ffn_down") != std::string::npos;
      if (name == "output.weight" || (more && use_more_bits(layer_of(name), layers_)))
        t = GgmlType::Q6_K;
    }
    for (GgmlType fallback : {t, GgmlType::Q8_0, GgmlType::F16}) {
      if (t == GgmlType::F32) return t;
      if (cols % ggml_type_traits(uint32_t(fallback))->block == 0) return fallback;
    }
    return GgmlType::F16;
  }

  // Rows of HF tensors, stacked in order (experts), optionally row-permuted, as `name`.
  // `quantize`: store in the chosen type when the rows allow it, else F32 (norms, routers).
  // The data is converted when the file is written, one tensor at a time.
  void add(const std::string& name, const std::vector<const io::TensorInfo*>& parts, bool quantize,
           int64_t permute_heads = 0, std::vector<int64_t> dims = {}) {
    const int64_t cols = parts[0]->shape.back();
    const int64_t rows_each = parts[0]->numel() / cols;
    for (const io::TensorInfo* t : parts) {
      if (!t->dtype)
        fail("tensor '{}' has dtype {}; export reads F32, F16 or BF16", t->name, t->dtype_name);
      if (t->shape.back() != cols || t->numel() / cols != rows_each)
        fail("tensor '{}' does not match the shape of its stack", t->name);
    }
    const GgmlType t = quantize ? type_for(name, cols) : GgmlType::F32;
    if (quantize && t != GgmlType::F32) ++quantized_;
    if (dims.empty()) {
      dims = {cols, rows_each};
      if (parts.size() > 1) dims.push_back(int64_t(parts.size()));
      if (parts[0]->shape.size() == 1) dims = {cols};
    }
    out.add_tensor(name, t, dims, [parts, cols, rows_each, permute_heads, t](std::string& bytes) {
      const size_t row_bytes = ggml_row_bytes(t, cols);
      std::vector<float> v, p;
      for (const io::TensorInfo* part : parts) {  // one expert in float at a time
        v.resize(size_t(part->numel()));
        to_f32(*part->dtype, part->data, v.data(), v.size());
        const float* x = v.data();
        if (permute_heads) {  // HF row r is stored at row permuted_row(r)
          p.resize(v.size());
          for (int64_t r = 0; r < rows_each; ++r)
            std::copy(v.begin() + r * cols, v.begin() + (r + 1) * cols,
                      p.begin() + permuted_row(r, rows_each, permute_heads) * cols);
          x = p.data();
        }
        const size_t at = bytes.size();
        bytes.resize(at + row_bytes * size_t(rows_each));
        for (int64_t r = 0; r < rows_each; ++r)
          quantize_row(t, x + r * cols, bytes.data() + at + size_t(r) * row_bytes, cols);
      }
    });
    ++tensors_;
  }
  void add(const std::string& name, const std::string& hf_name, bool quantize,
           int64_t permute_heads = 0) {
    add(name, {&store_.get(hf_name)}, quantize, permute_heads);
  }

  io::GgufWriter out;
  int64_t tensors_ = 0, quantized_ = 0;

 private:
  const io::TensorStore& store_;
  GgufExportType type_;
  int64_t layers_;
};

}  // namespace

GgufExportType parse_gguf_export_type(const std::string& name) {
  // general.file_type values: llama.cpp's LLAMA_FTYPE_MOSTLY_*.
  using Mix = GgufExportType::Mix;
  if (name == "F32") return {name, GgmlType::F32, Mix::kNone, 0};
  if (name == "F16") return {name, GgmlType::F16, Mix::kNone, 1};
  if (name == "BF16") return {name, GgmlType::BF16, Mix::kNone, 32};
  if (name == "Q8_0") return {name, GgmlType::Q8_0, Mix::kNone, 7};
  if (name == "Q4_0") return {name, GgmlType::Q4_0, Mix::kNone, 2};
  if (name == "Q4_K" || name == "Q4_K_S") return {name, GgmlType::Q4_K, Mix::kNone, 14};
  if (name == "Q4_K_M") return {name, GgmlType::Q4_K, Mix::kQ4KM, 15};
  if (name == "Q6_K") return {name, GgmlType::Q6_K, Mix::kNone, 18};
  if (name == "MXFP4_MOE") return {name, GgmlType::MXFP4, Mix::kMxfp4Moe, 38};
  fail("--type {}: choose F32, F16, BF16, Q8_0, Q4_0, Q4_K (= Q4_K_S), Q4_K_M, Q6_K or MXFP4_MOE",
       name);
}

GgufExportSummary export_gguf(const std::string& model_dir, const std::string& out_path,
                              const GgufExportType& type) {
  const ModelConfig c = load_config(model_dir);
  const std::string a = arch_name(c);
  for (bool moe : c.layer_is_moe)
    if (!moe)
      fail(
          "'{}' has dense layers; llama.cpp's {} architecture treats every layer as MoE, so the "
          "GGUF file could not say which are dense",
          model_dir, a);
  if (c.clip_qkv > 0) fail("'{}' clips q / k / v (clip_qkv), which GGUF cannot express", model_dir);
  if (c.router.sub_experts > 1)
    fail("'{}' is partitioned; merge it first (partition --merge)", model_dir);
  if (c.router.num_groups > 1 || c.router.has_selection_bias)
    fail("'{}' routes within groups or with a selection bias, which this exporter does not write",
         model_dir);
  io::check_output_path(out_path, "--out");
  const io::TensorStore store = io::TensorStore::open(model_dir);
  Writer w(store, type, c.num_layers);
  io::GgufWriter& g = w.out;
  GgufExportSummary summary;
  const std::string p = a + ".";
  g.set_string("general.architecture", a);
  g.set_string("general.name", std::filesystem::path(model_dir).filename().string());
  g.set_uint32("general.alignment", 32);
  g.set_uint32("general.file_type", type.file_type);
  if (is_quantized(type.base)) g.set_uint32("general.quantization_version", 2);
  g.set_uint32(p + "context_length", uint32_t(c.max_position_embeddings));
  g.set_uint32(p + "embedding_length", uint32_t(c.hidden_size));
  g.set_uint32(p + "block_count", uint32_t(c.num_layers));
  g.set_uint32(p + "feed_forward_length",
               uint32_t(c.family == Family::kMixtral || c.family == Family::kOlmoe
                            ? c.expert_intermediate_size
                            : c.dense_intermediate_size));
  g.set_uint32(p + "attention.head_count", uint32_t(c.num_heads));
  g.set_uint32(p + "attention.head_count_kv", uint32_t(c.num_kv_heads));
  g.set_uint32(p + "attention.key_length", uint32_t(c.head_dim));
  g.set_uint32(p + "attention.value_length", uint32_t(c.head_dim));
  g.set_float32(p + "attention.layer_norm_rms_epsilon", c.rms_norm_eps);
  g.set_float32(p + "rope.freq_base", c.rope_theta);
  g.set_uint32(p + "rope.dimension_count", uint32_t(c.head_dim));
  g.set_uint32(p + "expert_count", uint32_t(c.router.num_experts));
  g.set_uint32(p + "expert_used_count", uint32_t(c.router.top_k));
  g.set_bool(p + "expert_weights_norm", c.router.renormalize);
  g.set_uint32(p + "expert_gating_func", 1);  // softmax
  if (c.family == Family::kQwen2Moe || c.family == Family::kQwen3Moe)
    g.set_uint32(p + "expert_feed_forward_length", uint32_t(c.expert_intermediate_size));
  if (c.shared_intermediate_size > 0)
    g.set_uint32(p + "expert_shared_feed_forward_length", uint32_t(c.shared_intermediate_size));
  if (c.bos_token_id >= 0) g.set_uint32("tokenizer.ggml.bos_token_id", uint32_t(c.bos_token_id));
  if (!c.eos_token_ids.empty() && c.eos_token_ids[0] >= 0)
    g.set_uint32("tokenizer.ggml.eos_token_id", uint32_t(c.eos_token_ids[0]));
  // The GGUF spec's own key for the complete Hugging Face tokenizer: read back exactly.
  const std::string tok = model_dir + "/tokenizer.json";
  if (io::file_exists(tok)) {
    const std::string text = io::read_text_file(tok);
    g.set_string("tokenizer.huggingface.json", text);
    // llama.cpp's own keys too, so llama.cpp can load the file.
    if (!write_gguf_vocab(g, text, int32_t(c.bos_token_id),
                          c.eos_token_ids.empty() ? -1 : int32_t(c.eos_token_ids[0]), c.vocab_size,
                          &summary.vocab_note))
      summary.vocab_note =
          "no tokenizer.ggml.* vocabulary written (llama.cpp will not load "
          "the file): " +
          summary.vocab_note;
  }

  w.add("token_embd.weight", "model.embed_tokens.weight", true);
  w.add("output_norm.weight", "model.norm.weight", false);
  if (store.find("lm_head.weight")) w.add("output.weight", "lm_head.weight", true);
  const bool permute = c.family == Family::kMixtral;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string b = "blk." + std::to_string(l) + ".", lp = layer_prefix(l),
                      at = lp + "self_attn.", mp = moe_prefix(c, l);
    w.add(b + "attn_norm.weight", lp + "input_layernorm.weight", false);
    w.add(b + "ffn_norm.weight", lp + "post_attention_layernorm.weight", false);
    w.add(b + "attn_q.weight", at + "q_proj.weight", true, permute ? c.num_heads : 0);
    w.add(b + "attn_k.weight", at + "k_proj.weight", true, permute ? c.num_kv_heads : 0);
    w.add(b + "attn_v.weight", at + "v_proj.weight", true);
    w.add(b + "attn_output.weight", at + "o_proj.weight", true);
    for (const char* proj : {"q", "k", "v", "o"}) {
      const std::string bias = at + proj + "_proj.bias";
      if (store.find(bias))
        w.add(
            b + (std::string(proj) == "o" ? "attn_output" : "attn_" + std::string(proj)) + ".bias",
            bias, false);
    }
    if (store.find(at + "q_norm.weight")) {
      w.add(b + "attn_q_norm.weight", at + "q_norm.weight", false);
      w.add(b + "attn_k_norm.weight", at + "k_norm.weight", false);
    }
    w.add(b + "ffn_gate_inp.weight", mp + "gate.weight", false);
    std::vector<const io::TensorInfo*> gate, up, down;
    const std::string fused = mp + "experts.gate_up_proj";
    if (store.find(fused))
      fail("'{}' stores experts fused (experts.gate_up_proj); export it per expert first",
           model_dir);
    for (int64_t e = 0; e < c.router.num_experts; ++e) {
      const FfnNames n = expert_names(c, l, e);
      gate.push_back(&store.get(n.gate));
      up.push_back(&store.get(n.up));
      down.push_back(&store.get(n.down));
    }
    w.add(b + "ffn_gate_exps.weight", gate, true);
    w.add(b + "ffn_up_exps.weight", up, true);
    w.add(b + "ffn_down_exps.weight", down, true);
    if (c.shared_intermediate_size > 0) {
      const FfnNames s = shared_expert_names(c, l);
      w.add(b + "ffn_gate_shexp.weight", s.gate, true);
      w.add(b + "ffn_up_shexp.weight", s.up, true);
      w.add(b + "ffn_down_shexp.weight", s.down, true);
      if (c.shared_expert_gated)
        w.add(b + "ffn_gate_inp_shexp.weight", {&store.get(mp + "shared_expert_gate.weight")},
              false, 0, {c.hidden_size});
    }
  }
  g.write(out_path);  // streamed: one tensor converted and in memory at a time
  summary.tensors = w.tensors_;
  summary.quantized = w.quantized_;
  std::error_code ec;
  summary.bytes = out_path == "-" ? 0 : uint64_t(std::filesystem::file_size(out_path, ec));
  return summary;
}

}  // namespace sy::model
