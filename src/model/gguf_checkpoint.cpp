#include "model/gguf_checkpoint.h"

#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>

#include "model/tensor_names.h"
#include "util/error.h"
#include "util/quant_blocks.h"

namespace sy::model {
namespace {

using nlohmann::json;

struct ArchInfo {
  const char* arch;        // general.architecture
  const char* model_type;  // config.json
  const char* class_name;
  bool permuted_qk;  // the converter permuted q / k rows for adjacent-pair RoPE
};
constexpr ArchInfo kArchs[] = {
    {"llama", "mixtral", "MixtralForCausalLM", true},
    {"qwen2moe", "qwen2_moe", "Qwen2MoeForCausalLM", false},
    {"qwen3moe", "qwen3_moe", "Qwen3MoeForCausalLM", false},
    {"olmoe", "olmoe", "OlmoeForCausalLM", false},
};

const ArchInfo& arch_of(const io::GgufFile& f) {
  const std::string& a = f.get_string("general.architecture");
  for (const ArchInfo& info : kArchs)
    if (a == info.arch) return info;
  fail(
      "'{}': GGUF architecture '{}' is not supported (supported: llama with experts "
      "(Mixtral), qwen2moe, qwen3moe, olmoe)",
      f.path(), a);
}

// A per-layer key may be one value or an array of equal values (llama.cpp's get_key_or_arr).
uint64_t uniform_uint(const io::GgufFile& f, const std::string& key) {
  const io::GgufValue* v = f.find(key);
  if (v && v->type == io::GgufValueType::kArray) {
    const std::vector<double>& xs = f.get_numbers(key);
    if (xs.empty()) fail("'{}': metadata key '{}' is an empty array", f.path(), key);
    for (double x : xs)
      if (x != xs[0])
        fail("'{}': '{}' differs between layers; per-layer values are not supported", f.path(),
             key);
    return uint64_t(xs[0]);
  }
  return f.get_uint(key);
}

const io::GgufTensorInfo& tensor(const io::GgufFile& f, const std::string& name) {
  const io::GgufTensorInfo* t = f.find_tensor(name);
  if (!t) fail("'{}' has no tensor '{}'", f.path(), name);
  return *t;
}

// The q / k row order of the `llama` converter (formats.md 3.1): rows r of head h were written
// as W.reshape(heads, 2, rows/heads/2, in).swapaxes(1, 2); returns the source row of HF row r.
int64_t unpermuted_row(int64_t r, int64_t rows, int64_t heads) {
  const int64_t per_head = rows / heads, half = per_head / 2;
  const int64_t h = r / per_head, i = r % per_head;
  const int64_t pair = i / half, j = i % half;  // HF row (h, pair, j)
  return h * per_head + j * 2 + pair;           // stored at (h, j, pair)
}

class StoreBuilder {
 public:
  explicit StoreBuilder(const std::string& path) : file_(std::make_shared<io::GgufFile>(path)) {}

  // The tensor's values in a dtype Switchyard computes with: the mapping itself for F32, F16,
  // BF16 and the block formats it computes on (a row-permuted copy of the bytes when rows must
  // be permuted); an owned F32 copy for any other format dequantize_row reads.
  struct Values {
    const uint8_t* data;
    DType dtype;
    std::string file;  // empty when the bytes are not the file's (converted or permuted)
    uint64_t offset;
  };
  Values values(const io::GgufTensorInfo& t, int64_t permute_heads = 0) {
    std::optional<DType> direct;
    if (t.type == GgmlType::F32) direct = DType::F32;
    if (t.type == GgmlType::F16) direct = DType::F16;
    if (t.type == GgmlType::BF16) direct = DType::BF16;
    if (t.type == GgmlType::Q8_0) direct = DType::Q8_0;
    if (t.type == GgmlType::Q4_0) direct = DType::Q4_0;
    if (t.type == GgmlType::Q4_K) direct = DType::Q4_K;
    if (t.type == GgmlType::Q6_K) direct = DType::Q6_K;
    if (t.type == GgmlType::MXFP4) direct = DType::MXFP4;
    const int64_t cols = t.dims[0], rows = t.numel() / std::max<int64_t>(cols, 1);
    const size_t row_bytes = ggml_row_bytes(t.type, cols);
    const auto* src = static_cast<const uint8_t*>(t.data);
    if (permute_heads > 0 && (rows % permute_heads != 0 || (rows / permute_heads) % 2 != 0))
      fail("'{}': tensor '{}' has {} rows, not {} heads of an even size", file_->path(), t.name,
           rows, permute_heads);
    if (direct && permute_heads == 0) return {src, *direct, file_->path(), t.offset};
    if (direct) {  // whole rows move: no value changes
      std::vector<uint8_t>& out = owned_->emplace_back(t.nbytes);
      for (int64_t r = 0; r < rows; ++r)
        std::memcpy(out.data() + size_t(r) * row_bytes,
                    src + size_t(unpermuted_row(r, rows, permute_heads)) * row_bytes, row_bytes);
      return {out.data(), *direct, "", 0};
    }
    if (!can_dequantize(t.type))
      fail(
          "'{}': tensor '{}' is {}, which Switchyard cannot read yet (F32, F16, BF16, Q8_0, "
          "Q4_0, Q4_K, Q6_K and MXFP4 are supported)",
          file_->path(), t.name, ggml_type_name(t.type));
    std::vector<uint8_t>& out = owned_->emplace_back(size_t(t.numel()) * 4);
    auto* f = reinterpret_cast<float*>(out.data());
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t from = permute_heads ? unpermuted_row(r, rows, permute_heads) : r;
      dequantize_row(t.type, src + size_t(from) * row_bytes, f + r * cols, cols);
    }
    return {out.data(), DType::F32, "", 0};
  }

  // Adds `name` with HF shape `shape`, `bytes_offset` bytes into the values of `t`.
  void add(const std::string& name, const Values& v, std::vector<int64_t> shape,
           size_t bytes_offset = 0) {
    io::TensorInfo info;
    info.name = name;
    info.dtype = v.dtype;
    info.dtype_name = std::string(dtype_name(v.dtype));
    info.shape = std::move(shape);
    info.nbytes = dtype_bytes(v.dtype, info.numel());
    info.data = v.data + bytes_offset;
    info.file = v.file;
    info.offset = v.file.empty() ? 0 : v.offset + bytes_offset;
    tensors_.push_back(std::move(info));
  }

  // A 2-D (or 1-D) GGUF tensor under one HF name with its reversed dims.
  void map(const io::GgufTensorInfo& t, const std::string& name, int64_t permute_heads = 0) {
    add(name, values(t, permute_heads), t.shape());
  }

  // Stacked experts {in, out, E}: expert e's [out, in] rows [row0, row0 + rows) as `names[e]`.
  void split(const io::GgufTensorInfo& t, const Values& v, const std::vector<std::string>& names,
             int64_t row0, int64_t rows) {
    if (t.dims.size() != 3 || t.dims[2] != int64_t(names.size()) || row0 + rows > t.dims[1])
      fail("'{}': tensor '{}' has dims {}; expected {{in, {}, {}}}", file_->path(), t.name,
           json(t.dims).dump(), row0 + rows, names.size());
    const int64_t in = t.dims[0], out = t.dims[1];
    const size_t row_bytes = dtype_bytes(v.dtype, in);
    for (size_t e = 0; e < names.size(); ++e)
      add(names[e], v, {rows, in}, (size_t(e) * size_t(out) + size_t(row0)) * row_bytes);
  }

  const io::GgufFile& file() const { return *file_; }
  io::TensorStore finish() {
    struct Owner {
      std::shared_ptr<io::GgufFile> file;
      std::shared_ptr<std::deque<std::vector<uint8_t>>> values;
    };
    auto owner = std::make_shared<Owner>(Owner{file_, owned_});
    return io::TensorStore::from_tensors(file_->path(), std::move(tensors_), owner);
  }

 private:
  std::shared_ptr<io::GgufFile> file_;
  std::shared_ptr<std::deque<std::vector<uint8_t>>> owned_ =
      std::make_shared<std::deque<std::vector<uint8_t>>>();
  std::vector<io::TensorInfo> tensors_;
};

}  // namespace

bool is_gguf_file(const std::string& path) {
  return path.size() > 5 && path.compare(path.size() - 5, 5, ".gguf") == 0 &&
         std::filesystem::is_regular_file(path);
}

std::string gguf_config_json(const io::GgufFile& f) {
  const ArchInfo& a = arch_of(f);
  const std::string p = std::string(a.arch) + ".";
  auto key = [&](const char* k) { return p + k; };
  json c;
  c["architectures"] = {a.class_name};
  c["model_type"] = a.model_type;
  c["hidden_size"] = f.get_uint(key("embedding_length"));
  c["num_hidden_layers"] = f.get_uint(key("block_count"));
  const uint64_t heads = uniform_uint(f, key("attention.head_count"));
  c["num_attention_heads"] = heads;
  c["num_key_value_heads"] = f.find(key("attention.head_count_kv"))
                                 ? uniform_uint(f, key("attention.head_count_kv"))
                                 : heads;
  if (auto hd = f.uint_or_none(key("attention.key_length"))) c["head_dim"] = *hd;
  c["rms_norm_eps"] = f.get_float(key("attention.layer_norm_rms_epsilon"));
  c["rope_theta"] = f.float_or_none(key("rope.freq_base")).value_or(10000.0);
  c["max_position_embeddings"] = f.uint_or_none(key("context_length")).value_or(4096);
  if (const io::GgufValue* s = f.find(key("rope.scaling.type")))
    if (s->type != io::GgufValueType::kString || s->s != "none")
      fail("'{}': RoPE scaling '{}' ({}) is not implemented for GGUF models", f.path(), s->s,
           key("rope.scaling.type"));
  if (auto g = f.uint_or_none(key("expert_gating_func")); g && *g != 1)
    fail("'{}': {} = {} (not softmax) is not what the {} family routes with", f.path(),
         key("expert_gating_func"), *g, a.model_type);
  const io::GgufTensorInfo& embed = tensor(f, "token_embd.weight");
  if (embed.dims.size() != 2) fail("'{}': token_embd.weight is not 2-D", f.path());
  c["vocab_size"] = embed.dims[1];
  c["tie_word_embeddings"] = f.find_tensor("output.weight") == nullptr;
  if (auto id = f.uint_or_none("tokenizer.ggml.bos_token_id")) c["bos_token_id"] = *id;
  if (auto id = f.uint_or_none("tokenizer.ggml.eos_token_id")) c["eos_token_id"] = *id;

  const auto experts = f.uint_or_none(key("expert_count"));
  if (!experts || *experts == 0)
    fail("'{}': {} has no experts ({} missing or 0): a dense model, not an MoE", f.path(), a.arch,
         key("expert_count"));
  c["num_experts_per_tok"] = f.get_uint(key("expert_used_count"));
  const auto expert_key = f.uint_or_none(key("expert_feed_forward_length"));
  const uint64_t expert_ffn =
      expert_key ? *expert_key : uniform_uint(f, key("feed_forward_length"));
  const std::string family = a.model_type;
  const auto norm = [&](bool family_default) {
    const io::GgufValue* v = f.find(key("expert_weights_norm"));
    return v ? f.get_bool(key("expert_weights_norm")) : family_default;
  };
  if (family == "mixtral") {
    c["num_local_experts"] = *experts;
    c["intermediate_size"] = expert_ffn;
    c["sliding_window"] = nullptr;
  } else if (family == "qwen2_moe") {
    c["num_experts"] = *experts;
    c["moe_intermediate_size"] = expert_ffn;
    c["intermediate_size"] = f.uint_or_none(key("feed_forward_length")).value_or(expert_ffn);
    c["shared_expert_intermediate_size"] =
        f.uint_or_none(key("expert_shared_feed_forward_length")).value_or(0);
    c["norm_topk_prob"] = norm(false);  // llama.cpp's qwen2moe graph never renormalises
    c["qkv_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  } else if (family == "qwen3_moe") {
    c["num_experts"] = *experts;
    c["moe_intermediate_size"] = expert_ffn;
    c["intermediate_size"] = f.uint_or_none(key("feed_forward_length")).value_or(expert_ffn);
    c["norm_topk_prob"] = norm(true);  // llama.cpp's qwen3moe graph always renormalises
    c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  } else {  // olmoe
    c["num_experts"] = *experts;
    c["intermediate_size"] = expert_ffn;
    c["norm_topk_prob"] = norm(false);
    c["attention_bias"] = f.find_tensor("blk.0.attn_q.bias") != nullptr;
  }
  return c.dump(2);
}

io::TensorStore gguf_tensor_store(const std::string& path, const ModelConfig& c) {
  StoreBuilder b(path);
  const io::GgufFile& f = b.file();
  const ArchInfo& a = arch_of(f);
  const int64_t E = c.router.num_experts, I = c.expert_intermediate_size;
  static const std::regex kBlock(R"(blk\.(\d+)\.(.+))");
  for (const io::GgufTensorInfo& t : f.tensors()) {
    const std::string& n = t.name;
    if (n == "token_embd.weight") {
      b.map(t, "model.embed_tokens.weight");
      continue;
    }
    if (n == "output_norm.weight") {
      b.map(t, "model.norm.weight");
      continue;
    }
    if (n == "output.weight") {
      b.map(t, "lm_head.weight");
      continue;
    }
    std::smatch m;
    if (!std::regex_match(n, m, kBlock))
      fail("'{}': tensor '{}' has no Hugging Face counterpart Switchyard knows", path, n);
    const int64_t l = std::stoll(m[1]);
    if (l >= c.num_layers)
      fail("'{}': tensor '{}' belongs to layer {} but the model has {} layers", path, n, l,
           c.num_layers);
    const std::string rest = m[2], lp = layer_prefix(l), attn = lp + "self_attn.";
    const std::string mp = moe_prefix(c, l);
    auto experts = [&](auto pick) {
      std::vector<std::string> names;
      for (int64_t e = 0; e < E; ++e) names.push_back(pick(expert_names(c, l, e)));
      return names;
    };
    if (rest == "attn_norm.weight") {
      b.map(t, lp + "input_layernorm.weight");
    } else if (rest == "ffn_norm.weight") {
      b.map(t, lp + "post_attention_layernorm.weight");
    } else if (rest == "attn_q.weight" || rest == "attn_k.weight") {
      const bool q = rest[5] == 'q';
      b.map(t, attn + (q ? "q_proj.weight" : "k_proj.weight"),
            a.permuted_qk ? (q ? c.num_heads : c.num_kv_heads) : 0);
    } else if (rest == "attn_v.weight" || rest == "attn_output.weight" || rest == "attn_q.bias" ||
               rest == "attn_k.bias" || rest == "attn_v.bias" || rest == "attn_output.bias") {
      static const std::map<std::string, std::string> kProj = {{"attn_q", "q_proj"},
                                                               {"attn_k", "k_proj"},
                                                               {"attn_v", "v_proj"},
                                                               {"attn_output", "o_proj"}};
      const size_t dot = rest.find('.');
      b.map(t, attn + kProj.at(rest.substr(0, dot)) + rest.substr(dot));
    } else if (rest == "attn_q_norm.weight") {
      b.map(t, attn + "q_norm.weight");
    } else if (rest == "attn_k_norm.weight") {
      b.map(t, attn + "k_norm.weight");
    } else if (rest == "ffn_gate_inp.weight") {
      b.map(t, mp + "gate.weight");
    } else if (rest == "ffn_gate_inp_shexp.weight") {
      b.add(mp + "shared_expert_gate.weight", b.values(t), {1, c.hidden_size});
    } else if (rest == "ffn_gate_shexp.weight" || rest == "ffn_up_shexp.weight" ||
               rest == "ffn_down_shexp.weight") {
      const FfnNames s = shared_expert_names(c, l);
      b.map(t, rest[4] == 'g' ? s.gate : rest[4] == 'u' ? s.up : s.down);
    } else if (rest == "ffn_gate_exps.weight") {
      b.split(t, b.values(t), experts([](const FfnNames& x) { return x.gate; }), 0, I);
    } else if (rest == "ffn_up_exps.weight") {
      b.split(t, b.values(t), experts([](const FfnNames& x) { return x.up; }), 0, I);
    } else if (rest == "ffn_down_exps.weight") {
      b.split(t, b.values(t), experts([](const FfnNames& x) { return x.down; }), 0, c.hidden_size);
    } else if (rest == "ffn_gate_up_exps.weight") {
      const StoreBuilder::Values v = b.values(t);  // gate rows first, then up
      b.split(t, v, experts([](const FfnNames& x) { return x.gate; }), 0, I);
      b.split(t, v, experts([](const FfnNames& x) { return x.up; }), I, I);
    } else if (rest == "ffn_gate.weight" || rest == "ffn_up.weight" || rest == "ffn_down.weight") {
      const FfnNames d = dense_ffn_names(c, l);
      b.map(t, rest[4] == 'g' ? d.gate : rest[4] == 'u' ? d.up : d.down);
    } else {
      fail("'{}': tensor '{}' has no Hugging Face counterpart Switchyard knows", path, n);
    }
  }
  return b.finish();
}

}  // namespace sy::model
