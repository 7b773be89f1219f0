#include "model/weights.h"

#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <set>

#include "model/dbrx_checkpoint.h"
#include "model/family.h"
#include "model/gguf_checkpoint.h"
#include "model/tensor_names.h"
#include "ops/gemv_int8.h"
#include "ops/repack.h"
#include "util/error.h"

namespace sy::model {
namespace {

// Resolves tensor names and checks shapes, remembering which tensors were used.
class Loader {
 public:
  Loader(const io::TensorStore& store) : store_(store) {}

  const io::TensorInfo& tensor(const std::string& name, std::vector<int64_t> shape) {
    const io::TensorInfo& t = store_.get(name);
    if (!t.dtype)
      fail("tensor '{}' in '{}' has dtype {}; Switchyard computes with F32, F16 or BF16 weights",
           name, t.file, t.dtype_name);
    if (t.shape != shape) {
      io::TensorInfo want;
      want.shape = shape;
      fail("tensor '{}' in '{}' has shape {} but config.json implies {}", name, t.file,
           t.shape_str(), want.shape_str());
    }
    used_.insert(name);
    return t;
  }
  // The bytes of a U8 tensor of this shape (MXFP4 blocks and scales).
  const uint8_t* bytes_u8(const std::string& name, std::vector<int64_t> shape) {
    const io::TensorInfo& t = store_.get(name);
    if (t.dtype_name != "U8" || t.shape != shape) {
      io::TensorInfo want;
      want.shape = shape;
      fail("tensor '{}' in '{}' is {} {}; expected U8 {}", name, t.file, t.dtype_name,
           t.shape_str(), want.shape_str());
    }
    used_.insert(name);
    return static_cast<const uint8_t*>(t.data);
  }
  bool has(const std::string& name) const { return store_.find(name) != nullptr; }
  const io::TensorInfo& info(const std::string& name) const { return store_.get(name); }

  ops::WeightView matrix(const std::string& name, int64_t rows, int64_t cols) {
    const io::TensorInfo& t = tensor(name, {rows, cols});
    return ops::WeightView{*t.dtype, rows, cols, t.data};
  }
  std::vector<float> vector(const std::string& name, int64_t n) {
    const io::TensorInfo& t = tensor(name, {n});
    std::vector<float> v(static_cast<size_t>(n));
    to_f32(*t.dtype, t.data, v.data(), size_t(n));
    return v;
  }
  std::vector<float> matrix_f32(const std::string& name, int64_t rows, int64_t cols) {
    const io::TensorInfo& t = tensor(name, {rows, cols});
    std::vector<float> v(static_cast<size_t>(rows * cols));
    to_f32(*t.dtype, t.data, v.data(), v.size());
    return v;
  }
  // Any tensor of this shape, widened to float32 (row-major).
  std::vector<float> array_f32(const std::string& name, std::vector<int64_t> shape) {
    const io::TensorInfo& t = tensor(name, shape);
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    std::vector<float> v(n);
    to_f32(*t.dtype, t.data, v.data(), n);
    return v;
  }
  // Expert e's rows [row0, row0 + rows) of a fused 3-D tensor [E, R, cols].
  ops::WeightView fused_slice(const std::string& name, int64_t E, int64_t R, int64_t cols,
                              int64_t e, int64_t row0, int64_t rows) {
    const io::TensorInfo& t = tensor(name, {E, R, cols});
    ops::WeightView all{*t.dtype, E * R, cols, t.data};
    return all.slice_rows(e * R + row0, rows);
  }
  size_t num_unused() const { return store_.all().size() - used_.size(); }

 private:
  const io::TensorStore& store_;
  std::set<std::string> used_;
};

FfnWeights load_ffn(Loader& L, const FfnNames& n, int64_t H, int64_t I) {
  return FfnWeights{L.matrix(n.gate, I, H), L.matrix(n.up, I, H), L.matrix(n.down, H, I)};
}

// Counts an expert's bytes and, when another process owns it, drops the views (shapes were
// checked on the way in).
void account_expert(FfnWeights& x, bool owned, ModelWeights& w) {
  w.expert_bytes_total += x.bytes();
  if (owned) {
    w.expert_bytes_held += x.bytes();
    return;
  }
  x.gate.data = x.up.data = x.down.data = nullptr;
}

// Where a view into tensor t lies in t's file.
moe::OffloadedMatrix locate(const io::TensorInfo& t, const ops::WeightView& v) {
  if (t.file.empty())
    fail(
        "tensor '{}' is held in memory (dequantized from a quantized GGUF tensor), not in a "
        "file, so it cannot be offloaded: use an F32 / F16 / BF16 GGUF or the safetensors "
        "checkpoint",
        t.name);
  ops::WeightView shape = v;
  shape.data = nullptr;
  return {shape, t.file,
          t.offset +
              uint64_t(static_cast<const uint8_t*>(v.data) - static_cast<const uint8_t*>(t.data))};
}

// GPT-OSS's expert biases: gate_up [E, 2I] (gate and up interleaved) and down [E, H].
void load_gpt_oss_biases(Loader& L, const std::string& mp, int64_t E, int64_t I, int64_t H,
                         MoeWeights& moe) {
  const std::vector<float> gub = L.array_f32(mp + "gate_up_proj_bias", {E, 2 * I});
  moe.down_bias = L.array_f32(mp + "down_proj_bias", {E, H});
  moe.gate_bias.resize(size_t(E * I));
  moe.up_bias.resize(size_t(E * I));
  for (int64_t e = 0; e < E; ++e)
    for (int64_t i = 0; i < I; ++i) {
      moe.gate_bias[size_t(e * I + i)] = gub[size_t(e * 2 * I + 2 * i)];
      moe.up_bias[size_t(e * I + i)] = gub[size_t(e * 2 * I + 2 * i + 1)];
    }
}

void set_gpt_oss_expert(const ModelConfig& c, MoeWeights& moe, int64_t e, FfnWeights& x) {
  const int64_t I = c.expert_intermediate_size, H = c.hidden_size;
  x.gate_bias = moe.gate_bias.data() + e * I;
  x.up_bias = moe.up_bias.data() + e * I;
  x.down_bias = moe.down_bias.data() + e * H;
  x.clamp_limit = c.swiglu_limit;
  x.glu_alpha = 1.702f;  // GPT-OSS's fixed sigmoid sharpness
}

// One row of OpenAI's MXFP4 (groups of 16 bytes, byte j = value 2j in its low nibble and 2j + 1
// in its high one; one E8M0 scale byte per group) as ggml's block_mxfp4 (the scale byte, then
// byte j = value j low, value j + 16 high): the same E2M1 codes and scales, reordered.
void mxfp4_row_to_ggml(const uint8_t* blocks, const uint8_t* scales, int64_t groups, uint8_t* out) {
  for (int64_t g = 0; g < groups; ++g, blocks += 16, out += 17) {
    out[0] = scales[g];
    auto code = [&](int v) { return (blocks[v / 2] >> (4 * (v % 2))) & 0x0F; };
    for (int j = 0; j < 16; ++j) out[1 + j] = uint8_t(code(j) | code(j + 16) << 4);
  }
}

// GPT-OSS's experts as OpenAI publishes them (gpt-oss-20b / -120b): MXFP4 blocks [E, out,
// in / 32, 16] and E8M0 scales [E, out, in / 32], Linear layout (out rows), gate and up rows
// interleaved in gate_up. They become ggml MXFP4 rows of this process's own (gate, up, down
// split), which the block kernels compute on directly (repacked at load like a GGUF's).
void load_gpt_oss_mxfp4_experts(Loader& L, const ModelConfig& c, int64_t layer, MoeWeights& moe,
                                const ExpertMask& owned, ModelWeights& w) {
  const std::string mp = moe_prefix(c, layer) + "experts.";
  const int64_t E = c.router.num_experts, H = c.hidden_size, I = c.expert_intermediate_size;
  if (H % 32 != 0 || I % 32 != 0)
    fail("'{}': MXFP4 experts need hidden_size ({}) and intermediate_size ({}) in 32s",
         c.architecture, H, I);
  const int64_t gh = H / 32, gi = I / 32;
  const uint8_t* gu = L.bytes_u8(mp + "gate_up_proj_blocks", {E, 2 * I, gh, 16});
  const uint8_t* gus = L.bytes_u8(mp + "gate_up_proj_scales", {E, 2 * I, gh});
  const uint8_t* dn = L.bytes_u8(mp + "down_proj_blocks", {E, H, gi, 16});
  const uint8_t* dns = L.bytes_u8(mp + "down_proj_scales", {E, H, gi});
  load_gpt_oss_biases(L, mp, E, I, H, moe);
  moe.experts.resize(size_t(E));
  const size_t row_h = dtype_bytes(DType::MXFP4, H), row_i = dtype_bytes(DType::MXFP4, I);
  for (int64_t e = 0; e < E; ++e) {
    FfnWeights& x = moe.experts[size_t(e)];
    x.gate = {DType::MXFP4, I, H, nullptr};
    x.up = {DType::MXFP4, I, H, nullptr};
    x.down = {DType::MXFP4, H, I, nullptr};
    set_gpt_oss_expert(c, moe, e, x);
    w.expert_bytes_total += x.bytes();
    if (!owned.empty() && !owned[size_t(e)]) continue;
    w.expert_bytes_held += x.bytes();
    w.resident.emplace_back(std::make_unique_for_overwrite<uint8_t[]>(x.bytes()));
    uint8_t* m = w.resident.back().get();
    uint8_t *gate = m, *up = m + I * row_h, *down = m + 2 * I * row_h;
    for (int64_t i = 0; i < I; ++i)
      for (int64_t half = 0; half < 2; ++half) {
        const int64_t r = e * 2 * I + 2 * i + half;  // row 2i: gate i, row 2i + 1: up i
        mxfp4_row_to_ggml(gu + r * gh * 16, gus + r * gh, gh, (half ? up : gate) + i * row_h);
      }
    for (int64_t h = 0; h < H; ++h) {
      const int64_t r = e * H + h;
      mxfp4_row_to_ggml(dn + r * gi * 16, dns + r * gi, gi, down + h * row_i);
    }
    x.gate.data = gate, x.up.data = up, x.down.data = down;
  }
}

// GPT-OSS and Llama 4 store each layer's experts as gate_up [E, H, 2I] (x @ W layout) and
// down [E, I, H]: GPT-OSS with gate and up columns interleaved and biases, Llama 4 with the
// gate's columns first and no biases. They are rearranged once, into float32 [I, H] / [I, H] /
// [H, I] matrices of this process's own, and run as any expert does.
void load_transposed_experts(Loader& L, const ModelConfig& c, int64_t layer, MoeWeights& moe,
                             const ExpertMask& owned, ModelWeights& w) {
  const std::string mp = moe_prefix(c, layer) + "experts.";
  const int64_t E = c.router.num_experts, H = c.hidden_size, I = c.expert_intermediate_size;
  const bool gpt_oss = c.family == Family::kGptOss;  // interleaved columns, biases, clamp
  if (gpt_oss && L.has(mp + "gate_up_proj_blocks"))
    return load_gpt_oss_mxfp4_experts(L, c, layer, moe, owned, w);
  const std::vector<float> gu = L.array_f32(mp + "gate_up_proj", {E, H, 2 * I});
  const std::vector<float> dn = L.array_f32(mp + "down_proj", {E, I, H});
  // Column of gate value i and of up value i within a row of 2I.
  auto gate_col = [&](int64_t i) { return gpt_oss ? 2 * i : i; };
  auto up_col = [&](int64_t i) { return gpt_oss ? 2 * i + 1 : I + i; };
  if (gpt_oss) load_gpt_oss_biases(L, mp, E, I, H, moe);
  moe.experts.resize(size_t(E));
  for (int64_t e = 0; e < E; ++e) {
    FfnWeights& x = moe.experts[size_t(e)];
    x.gate = {DType::F32, I, H, nullptr};
    x.up = {DType::F32, I, H, nullptr};
    x.down = {DType::F32, H, I, nullptr};
    if (gpt_oss) set_gpt_oss_expert(c, moe, e, x);
    const bool mine = owned.empty() || owned[size_t(e)];
    w.expert_bytes_total += x.bytes();
    if (!mine) continue;
    w.expert_bytes_held += x.bytes();
    w.resident.emplace_back(std::make_unique_for_overwrite<uint8_t[]>(x.bytes()));
    float* m = reinterpret_cast<float*>(w.resident.back().get());
    float *gate = m, *up = m + I * H, *down = m + 2 * I * H;
    const float* g = gu.data() + e * H * 2 * I;
    for (int64_t h = 0; h < H; ++h)
      for (int64_t i = 0; i < I; ++i) {
        gate[i * H + h] = g[h * 2 * I + gate_col(i)];
        up[i * H + h] = g[h * 2 * I + up_col(i)];
      }
    const float* d = dn.data() + e * I * H;
    for (int64_t i = 0; i < I; ++i)
      for (int64_t h = 0; h < H; ++h) down[h * I + i] = d[i * H + h];
    x.gate.data = gate, x.up.data = up, x.down.data = down;
  }
}

void load_experts(Loader& L, const ModelConfig& c, int64_t layer, MoeWeights& moe,
                  const ExpertMask& owned, bool offload, ModelWeights& w) {
  const std::string mp = moe_prefix(c, layer);
  const bool rearranged = c.family == Family::kGptOss || c.family == Family::kLlama4;
  if (offload && (rearranged || c.family == Family::kDbrx))
    fail(
        "--expert-cache-mb: {}'s experts are rearranged in memory when loaded{}, so they cannot "
        "be read on demand from the checkpoint (leave --expert-cache-mb out)",
        c.family_name(), c.family == Family::kDbrx ? " (w2 is transposed)" : "");
  if (rearranged) {
    return load_transposed_experts(L, c, layer, moe, owned, w);
  }
  const int64_t E = c.router.num_experts, H = c.hidden_size, I = c.expert_intermediate_size;
  moe.experts.resize(size_t(E));
  std::vector<moe::OffloadedExpert>* files = nullptr;
  if (offload) {
    w.offloaded.resize(size_t(c.num_layers));
    files = &w.offloaded[size_t(layer)];
    files->resize(size_t(E));
  }
  auto finish = [&] {
    for (int64_t e = 0; e < E; ++e) {
      // Offloaded experts keep their shapes; their bytes are read by the expert cache.
      if (offload)
        moe.experts[size_t(e)].gate.data = moe.experts[size_t(e)].up.data =
            moe.experts[size_t(e)].down.data = nullptr;
      account_expert(moe.experts[size_t(e)], !offload && (owned.empty() || owned[size_t(e)]), w);
    }
  };
  // transformers v5 (and Granite) save experts fused: gate_up [E, 2I, H] (gate rows first),
  // down [E, H, I].
  const FamilyInfo& f = family_info(c.family);
  const std::string fused_gate_up = mp + std::string(f.fused_gate_up);
  const std::string fused_down = mp + std::string(f.fused_down);
  if (L.has(fused_gate_up)) {
    for (int64_t e = 0; e < E; ++e) {
      auto& x = moe.experts[size_t(e)];
      x.gate = L.fused_slice(fused_gate_up, E, 2 * I, H, e, 0, I);
      x.up = L.fused_slice(fused_gate_up, E, 2 * I, H, e, I, I);
      x.down = L.fused_slice(fused_down, E, H, I, e, 0, H);
      if (files) {
        const io::TensorInfo& gu = L.info(fused_gate_up);
        (*files)[size_t(e)] = {locate(gu, x.gate), locate(gu, x.up),
                               locate(L.info(fused_down), x.down)};
      }
    }
    return finish();
  }
  for (int64_t e = 0; e < E; ++e) {
    const FfnNames n = expert_names(c, layer, e);
    moe.experts[size_t(e)] = load_ffn(L, n, H, I);
    if (files) {
      const FfnWeights& x = moe.experts[size_t(e)];
      (*files)[size_t(e)] = {locate(L.info(n.gate), x.gate), locate(L.info(n.up), x.up),
                             locate(L.info(n.down), x.down)};
    }
  }
  finish();
}

void load_mla(Loader& L, const ModelConfig& c, const std::string& p, LayerWeights& w) {
  const MlaConfig& m = c.mla;
  const int64_t H = c.hidden_size, nh = c.num_heads, qw = nh * m.qk_head_dim();
  MlaWeights& a = w.mla;
  if (m.q_lora_rank > 0) {
    a.q_a = L.matrix(p + "q_a_proj.weight", m.q_lora_rank, H);
    a.q_a_norm = L.vector(p + "q_a_layernorm.weight", m.q_lora_rank);
    a.q_b = L.matrix(p + "q_b_proj.weight", qw, m.q_lora_rank);
    if (c.qkv_bias) a.q_a_bias = L.vector(p + "q_a_proj.bias", m.q_lora_rank);
  } else {
    a.q = L.matrix(p + "q_proj.weight", qw, H);
  }
  a.kv_a = L.matrix(p + "kv_a_proj_with_mqa.weight", m.latent_width(), H);
  if (c.qkv_bias) a.kv_a_bias = L.vector(p + "kv_a_proj_with_mqa.bias", m.latent_width());
  a.kv_a_norm = L.vector(p + "kv_a_layernorm.weight", m.kv_lora_rank);
  a.kv_b = L.matrix(p + "kv_b_proj.weight", nh * (m.qk_nope_dim + m.v_head_dim), m.kv_lora_rank);
  if (a.kv_b.dtype != DType::F32)  // the absorbed products read it as float32
    a.kv_b_f32 = L.matrix_f32(p + "kv_b_proj.weight", a.kv_b.rows, a.kv_b.cols);
  w.o = L.matrix(p + "o_proj.weight", H, nh * m.v_head_dim);
  if (c.o_bias) w.o_bias = L.vector(p + "o_proj.bias", H);
}

void load_attention(Loader& L, const ModelConfig& c, const std::string& p, LayerWeights& w) {
  if (c.mla.enabled()) return load_mla(L, c, p, w);
  const int64_t H = c.hidden_size, qw = c.q_width(), kvw = c.kv_width();
  w.q = L.matrix(p + "q_proj.weight", qw, H);
  w.k = L.matrix(p + "k_proj.weight", kvw, H);
  w.v = L.matrix(p + "v_proj.weight", kvw, H);
  w.o = L.matrix(p + "o_proj.weight", H, qw);
  if (c.qkv_bias) {
    w.q_bias = L.vector(p + "q_proj.bias", qw);
    w.k_bias = L.vector(p + "k_proj.bias", kvw);
    w.v_bias = L.vector(p + "v_proj.bias", kvw);
  }
  if (c.o_bias) w.o_bias = L.vector(p + "o_proj.bias", H);
  if (c.attention_sinks) w.sinks = L.vector(p + "sinks", c.num_heads);
  if (c.qk_norm != QkNorm::kNone && c.qk_norm != QkNorm::kL2AfterRope) {  // L2: no weights
    const FamilyInfo& f = family_info(c.family);
    const bool full = c.qk_norm == QkNorm::kFullWidth;
    w.q_norm = L.vector(p + std::string(f.q_norm), full ? qw : c.head_dim);
    w.k_norm = L.vector(p + std::string(f.k_norm), full ? kvw : c.head_dim);
  }
}

}  // namespace

namespace {

// Calls fn on every matrix view of the forward pass; the routed experts' only with `experts`.
template <class Fn>
void for_each_matrix(ModelWeights& mw, bool experts, Fn&& fn) {
  auto ffn = [&](FfnWeights& f) {
    fn(f.gate);
    fn(f.up);
    fn(f.down);
  };
  fn(mw.embed);
  fn(mw.lm_head);
  for (LayerWeights& l : mw.layers) {
    for (ops::WeightView* v :
         {&l.q, &l.k, &l.v, &l.o, &l.mla.q_a, &l.mla.q_b, &l.mla.q, &l.mla.kv_a, &l.mla.kv_b})
      fn(*v);
    if (!l.is_moe) ffn(l.dense);
    if (l.is_moe && l.moe.has_shared) ffn(l.moe.shared);
    if (l.is_moe && experts)
      for (FfnWeights& e : l.moe.experts) ffn(e);
  }
}

// Copies every matrix the forward pass reads from the mapping (all but the routed experts) into
// memory of its own, so that with offloaded experts nothing touches the mapped files after
// loading: a file truncated or replaced underneath a running process then fails an expert
// read with a clear error, instead of faulting (SIGBUS) on a mapped page.
void make_resident(ModelWeights& mw) {
  std::map<const void*, const void*> copied;  // tied embeddings stay one copy
  for_each_matrix(mw, false, [&](ops::WeightView& v) {
    if (!v.data) return;
    auto [it, fresh] = copied.try_emplace(v.data, nullptr);
    if (fresh) {
      mw.resident.emplace_back(std::make_unique_for_overwrite<uint8_t[]>(v.bytes()));
      std::memcpy(mw.resident.back().get(), v.data, v.bytes());
      it->second = mw.resident.back().get();
    }
    v.data = it->second;
  });
}

// Repacks every matrix this process computes with (ops/repack.h) whose kernel reads the
// repacked layout: block types for the int8 kernels (2-5x their row-major GEMV speed,
// bench/results/quantized.md), BF16 for the AVX512_BF16 kernel (no repacking per call). The
// row-major bytes stay mapped for the paths that read rows (embedding lookup, > 512-row
// prefill of block types, offloading).
void repack_for_kernels(ModelWeights& mw) {
  std::map<const void*, std::vector<ops::WeightView*>> users;  // tied embeddings: one copy
  for_each_matrix(mw, true, [&](ops::WeightView& v) {
    if (&v == &mw.embed) return;  // its rows are looked up; a tied lm_head has its own view
    if (v.data && v.rows > 0 && ops::repack_enabled(v.dtype)) users[v.data].push_back(&v);
  });
  std::vector<std::vector<ops::WeightView*>*> todo;
  for (auto& [data, views] : users) todo.push_back(&views);
  std::vector<std::unique_ptr<ops::PackedWeight>> packed(todo.size());
#pragma omp parallel for schedule(dynamic)
  for (size_t i = 0; i < todo.size(); ++i)
    packed[i] = std::make_unique<ops::PackedWeight>(*todo[i]->front());
  for (size_t i = 0; i < todo.size(); ++i) {
    for (ops::WeightView* v : *todo[i]) v->packed = packed[i]->data();
    mw.repacked_bytes += packed[i]->bytes();
    mw.repacked.push_back(std::move(packed[i]));
  }
}

}  // namespace

ModelWeights load_weights(const std::string& model_dir, const ModelConfig& c,
                          const ExpertMask& owned, bool offload_experts) {
  if (!owned.empty() && int64_t(owned.size()) != c.router.num_experts)
    fail("expert ownership mask has {} entries but the model has {} experts", owned.size(),
         c.router.num_experts);
  ModelWeights mw;
  mw.store = is_gguf_file(model_dir)     ? gguf_tensor_store(model_dir, c)
             : c.family == Family::kDbrx ? dbrx_tensor_store(model_dir, c)
                                         : io::TensorStore::open(model_dir);
  Loader L(mw.store);
  const int64_t H = c.hidden_size, V = c.vocab_size;
  mw.embed = L.matrix("model.embed_tokens.weight", V, H);
  mw.final_norm = L.vector("model.norm.weight", H);
  if (c.layer_norm && c.norm_bias) mw.final_norm_bias = L.vector("model.norm.bias", H);
  if (c.tie_word_embeddings && !L.has("lm_head.weight"))
    mw.lm_head = mw.embed;
  else
    mw.lm_head = L.matrix("lm_head.weight", V, H);

  mw.layers.resize(size_t(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerWeights& w = mw.layers[size_t(i)];
    const std::string p = layer_prefix(i);
    w.attn_norm = L.vector(p + "input_layernorm.weight", H);
    w.ffn_norm = L.vector(p + "post_attention_layernorm.weight", H);
    if (c.layer_norm && c.norm_bias) {
      w.attn_norm_bias = L.vector(p + "input_layernorm.bias", H);
      w.ffn_norm_bias = L.vector(p + "post_attention_layernorm.bias", H);
    }
    load_attention(L, c, p + "self_attn.", w);
    w.is_moe = c.layer_is_moe[size_t(i)];
    if (!w.is_moe) {
      w.dense = load_ffn(L, dense_ffn_names(c, i), H, c.dense_intermediate_size);
      continue;
    }
    const std::string mp = moe_prefix(c, i);
    const int64_t G = c.router.num_logits();  // one gate row per expert the router ranks
    w.moe.router = L.matrix_f32(mp + std::string(family_info(c.family).router_weight), G, H);
    if (c.router.has_selection_bias) {
      const FamilyInfo& f = family_info(c.family);
      const std::string name = mp + std::string(f.selection_bias);
      w.moe.selection_bias = f.selection_bias_2d ? L.array_f32(name, {1, G}) : L.vector(name, G);
    }
    if (c.router_bias) w.moe.router_bias = L.vector(mp + "router.bias", G);
    load_experts(L, c, i, w.moe, owned, offload_experts, mw);
    if (c.shared_intermediate_size > 0) {
      w.moe.has_shared = true;
      w.moe.shared = load_ffn(L, shared_expert_names(c, i), H, c.shared_intermediate_size);
      if (c.shared_expert_gated)
        w.moe.shared_gate = L.matrix_f32(mp + "shared_expert_gate.weight", 1, H);
      if (c.branch_softmax_gate)
        w.moe.combine_gate = L.matrix_f32(mp + "combine_gate.weight", 2, H);
    }
    if (c.shortcut != Shortcut::kNone)
      w.shortcut_norm = L.vector(p + "shortcut_layernorm.weight", H);
  }
  mw.num_unused_tensors = L.num_unused();
  if (offload_experts) make_resident(mw);
  repack_for_kernels(mw);
  return mw;
}

ParamCounts count_params(const ModelConfig& c) {
  ParamCounts p;
  const int64_t H = c.hidden_size, V = c.vocab_size;
  p.embedding = V * H;
  p.total = p.embedding + (c.tie_word_embeddings ? 0 : V * H) + H;
  p.active_per_token = V * H + H;  // the LM head is a matmul even when tied
  for (int64_t i = 0; i < c.num_layers; ++i) {
    int64_t attn = 2 * H + H * c.q_width() * 2 + H * c.kv_width() * 2;
    if (c.qkv_bias) attn += c.q_width() + 2 * c.kv_width();
    if (const MlaConfig& m = c.mla; m.enabled()) {
      const int64_t qw = c.num_heads * m.qk_head_dim();
      attn = 2 * H + m.latent_width() * H + m.kv_lora_rank +
             m.kv_lora_rank * c.num_heads * (m.qk_nope_dim + m.v_head_dim) +
             H * c.num_heads * m.v_head_dim +
             (m.q_lora_rank > 0 ? m.q_lora_rank * (H + 1 + qw) : qw * H) +
             (c.qkv_bias ? m.latent_width() + m.q_lora_rank : 0);
    }
    if (c.o_bias) attn += H;
    if (c.qk_norm == QkNorm::kPerHead || c.qk_norm == QkNorm::kPerHeadAfterRope)
      attn += 2 * c.head_dim;
    if (c.qk_norm == QkNorm::kFullWidth) attn += c.q_width() + c.kv_width();
    p.total += attn;
    p.active_per_token += attn;
    if (!c.layer_is_moe[size_t(i)]) {
      const int64_t ffn = 3 * H * c.dense_intermediate_size;
      p.total += ffn;
      p.active_per_token += ffn;
      continue;
    }
    const int64_t E = c.router.num_experts, K = c.router.top_k;
    const int64_t expert = 3 * H * c.expert_intermediate_size;
    const int64_t shared = 3 * H * c.shared_intermediate_size + (c.shared_expert_gated ? H : 0) +
                           (c.branch_softmax_gate ? 2 * H : 0) +
                           (c.shortcut != Shortcut::kNone ? H : 0);
    const int64_t G = c.router.num_logits();
    const int64_t router = G * H + (c.router.has_selection_bias ? G : 0);
    p.total += router + E * expert + shared;
    p.active_per_token += router + K * expert + shared;
  }
  return p;
}

size_t decode_bytes_per_token(const ModelConfig& c, const ModelWeights& w) {
  size_t bytes = w.lm_head.bytes();
  for (const auto& l : w.layers) {
    bytes += l.q.bytes() + l.k.bytes() + l.v.bytes() + l.o.bytes();
    if (c.mla.enabled())
      bytes += l.mla.q_a.bytes() + l.mla.q_b.bytes() + l.mla.q.bytes() + l.mla.kv_a.bytes() +
               l.mla.kv_b.bytes();
    if (!l.is_moe) {
      bytes += l.dense.bytes();
      continue;
    }
    bytes += l.moe.router.size() * 4 + size_t(c.router.top_k) * l.moe.experts[0].bytes();
    if (l.moe.has_shared) bytes += l.moe.shared.bytes();
  }
  return bytes;
}

}  // namespace sy::model
