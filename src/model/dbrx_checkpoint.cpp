#include "model/dbrx_checkpoint.h"

#include <cstring>
#include <deque>
#include <memory>
#include <set>
#include <vector>

#include <fmt/format.h>

#include "model/tensor_names.h"
#include "util/error.h"

namespace sy::model {

namespace {

class Renamer {
 public:
  explicit Renamer(const std::string& dir)
      : src_(std::make_shared<io::TensorStore>(io::TensorStore::open(dir))), dir_(dir) {}

  // `from` with shape `shape` (checked), or fails naming it.
  const io::TensorInfo& get(const std::string& from, const std::vector<int64_t>& shape) {
    const io::TensorInfo& t = src_->get(from);
    if (t.shape != shape)
      fail("'{}': DBRX tensor '{}' has shape {}, expected {}", dir_, from, t.shape_str(),
           fmt::format("[{}]", fmt::join(shape, ", ")));
    if (!t.dtype || is_block_type(*t.dtype))
      fail("'{}': DBRX tensor '{}' is {}, which Switchyard cannot compute with", dir_, from,
           t.dtype_name);
    used_.insert(from);
    return t;
  }
  // Rows [row0, row0 + rows) of 2-D `t` under `name`.
  void rows(const io::TensorInfo& t, int64_t row0, int64_t rows, const std::string& name) {
    const int64_t cols = t.shape.size() == 2 ? t.shape[1] : 1;
    const size_t off = size_t(row0) * dtype_bytes(*t.dtype, cols);
    io::TensorInfo v = t;
    v.name = name;
    v.shape = t.shape.size() == 2 ? std::vector<int64_t>{rows, cols} : t.shape;
    v.data = static_cast<const uint8_t*>(t.data) + off;
    v.offset = t.offset + off;
    v.nbytes = dtype_bytes(*t.dtype, rows * cols);
    out_.push_back(std::move(v));
  }
  void whole(const io::TensorInfo& t, const std::string& name) {
    rows(t, 0, t.shape.size() == 2 ? t.shape[0] : 1, name);
  }
  // Rows [row0, row0 + rows) of 2-D `t`, transposed into an owned [cols, rows] copy.
  void transposed(const io::TensorInfo& t, int64_t row0, int64_t rows, const std::string& name) {
    const int64_t cols = t.shape[1];
    const size_t es = dtype_size(*t.dtype);
    std::vector<uint8_t>& buf = owned_->emplace_back(size_t(rows * cols) * es);
    const auto* src = static_cast<const uint8_t*>(t.data) + size_t(row0 * cols) * es;
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        std::memcpy(buf.data() + size_t(c * rows + r) * es, src + size_t(r * cols + c) * es, es);
    io::TensorInfo v = t;
    v.name = name;
    v.shape = {cols, rows};
    v.data = buf.data();
    v.file.clear();  // not the file's bytes: never read from it directly
    v.offset = 0;
    v.nbytes = buf.size();
    out_.push_back(std::move(v));
  }

  bool has(const std::string& from) const { return src_->find(from) != nullptr; }

  // Fails naming the first tensor of the checkpoint that no get() asked for.
  io::TensorStore finish() {
    for (const auto& entry : src_->all())
      if (!used_.count(entry.first))
        fail("'{}': tensor '{}' is not part of the DBRX layout Switchyard reads", dir_,
             entry.first);
    struct Owner {
      std::shared_ptr<io::TensorStore> src;
      std::shared_ptr<std::deque<std::vector<uint8_t>>> owned;
    };
    return io::TensorStore::from_tensors(dir_, std::move(out_),
                                         std::make_shared<Owner>(Owner{src_, owned_}));
  }

 private:
  std::shared_ptr<io::TensorStore> src_;
  std::shared_ptr<std::deque<std::vector<uint8_t>>> owned_ =
      std::make_shared<std::deque<std::vector<uint8_t>>>();
  std::vector<io::TensorInfo> out_;
  std::string dir_;
  std::set<std::string> used_;
};

}  // namespace

io::TensorStore dbrx_tensor_store(const std::string& dir, const ModelConfig& c) {
  Renamer r(dir);
  const int64_t H = c.hidden_size, V = c.vocab_size, qw = c.q_width(), kvw = c.kv_width();
  const int64_t E = c.router.num_experts, I = c.expert_intermediate_size;
  r.whole(r.get("transformer.wte.weight", {V, H}), "model.embed_tokens.weight");
  r.whole(r.get("transformer.norm_f.weight", {H}), "model.norm.weight");
  if (!c.tie_word_embeddings || r.has("lm_head.weight"))  // tied checkpoints may omit it
    r.whole(r.get("lm_head.weight", {V, H}), "lm_head.weight");
  for (int64_t l = 0; l < c.num_layers; ++l) {
    const std::string b = fmt::format("transformer.blocks.{}.", l), p = layer_prefix(l);
    const std::string na = b + "norm_attn_norm.", a = p + "self_attn.";
    r.whole(r.get(na + "norm_1.weight", {H}), p + "input_layernorm.weight");
    r.whole(r.get(na + "norm_2.weight", {H}), p + "post_attention_layernorm.weight");
    const io::TensorInfo& qkv = r.get(na + "attn.Wqkv.weight", {qw + 2 * kvw, H});
    r.rows(qkv, 0, qw, a + "q_proj.weight");
    r.rows(qkv, qw, kvw, a + "k_proj.weight");
    r.rows(qkv, qw + kvw, kvw, a + "v_proj.weight");
    r.whole(r.get(na + "attn.out_proj.weight", {H, qw}), a + "o_proj.weight");
    const std::string m = moe_prefix(c, l);
    r.whole(r.get(b + "ffn.router.layer.weight", {E, H}), m + "gate.weight");
    const io::TensorInfo& w1 = r.get(b + "ffn.experts.mlp.w1", {E * I, H});
    const io::TensorInfo& v1 = r.get(b + "ffn.experts.mlp.v1", {E * I, H});
    const io::TensorInfo& w2 = r.get(b + "ffn.experts.mlp.w2", {E * I, H});
    for (int64_t e = 0; e < E; ++e) {
      const FfnNames n = expert_names(c, l, e);
      r.rows(w1, e * I, I, n.gate);
      r.rows(v1, e * I, I, n.up);
      r.transposed(w2, e * I, I, n.down);
    }
  }
  return r.finish();
}

}  // namespace sy::model
