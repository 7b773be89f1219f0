#include "model/expert_partition.h"

#include <cmath>
#include <cstring>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>
#include <numeric>

#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/checkpoint_rewrite.h"
#include "model/config.h"
#include "model/family.h"
#include "model/tensor_names.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::model {

namespace fs = std::filesystem;

namespace {

// What the complete transformation divides each part's router weight by (see the header).
float weight_divisor(const moe::RouterConfig& r, int factor) {
  const bool softmax =
      r.score == moe::ScoreFunc::kSoftmax || r.score == moe::ScoreFunc::kSoftmaxTopK;
  return softmax || r.renormalize ? float(factor) : 1.0f;
}

// Rows of a [rows, cols] tensor repeated `factor` times each: [rows * factor, cols].
void repeat_rows(RewrittenTensors& out, const io::TensorInfo& t, int factor) {
  const int64_t rows = t.shape[0];
  const size_t row_bytes = t.nbytes / size_t(rows);
  std::vector<int64_t> shape = t.shape;
  shape[0] *= factor;
  uint8_t* dst = out.add(t.name, t, shape, t.nbytes * size_t(factor));
  const auto* src = static_cast<const uint8_t*>(t.data);
  for (int64_t r = 0; r < rows; ++r)
    for (int p = 0; p < factor; ++p, dst += row_bytes)
      std::memcpy(dst, src + size_t(r) * row_bytes, row_bytes);
}

// Every factor-th row of a [rows * factor, cols] tensor, refused unless each group of `factor`
// rows is identical (a complete partition that nothing changed since).
void unrepeat_rows(RewrittenTensors& out, const io::TensorInfo& t, int factor) {
  const int64_t rows = t.shape[0] / factor;
  const size_t row_bytes = t.nbytes / size_t(t.shape[0]);
  std::vector<int64_t> shape = t.shape;
  shape[0] = rows;
  uint8_t* dst = out.add(t.name, t, shape, row_bytes * size_t(rows));
  const auto* src = static_cast<const uint8_t*>(t.data);
  for (int64_t r = 0; r < rows; ++r) {
    const uint8_t* first = src + size_t(r * factor) * row_bytes;
    for (int p = 1; p < factor; ++p)
      if (std::memcmp(first, first + size_t(p) * row_bytes, row_bytes) != 0)
        fail(
            "tensor '{}': rows {} .. {} (the copies of one expert's row) differ, so the model "
            "changed after it was partitioned and merging it would not be exact",
            t.name, r * factor, r * factor + factor - 1);
    std::memcpy(dst + size_t(r) * row_bytes, first, row_bytes);
  }
}

// One expert's projections: gate / up [width, H] (a row per neuron), down [H, width].
struct ExpertRows {
  const uint8_t *gate = nullptr, *up = nullptr, *down = nullptr;
};
struct MutableExpertRows {
  uint8_t *gate = nullptr, *up = nullptr, *down = nullptr;
};

// A layer's routed experts as stored, per expert tensors or fused (transformers v5:
// gate_up_proj [E, 2I, H] with gate rows first, down_proj [E, H, I]).
class StoredExperts {
 public:
  StoredExperts(const io::TensorStore& store, const ModelConfig& c, int64_t layer)
      : c_(c), count_(c.router.num_experts), width_(c.expert_intermediate_size) {
    const std::string m = moe_prefix(c, layer);
    const int64_t H = c.hidden_size;
    if (store.find(m + "experts.gate_up_proj")) {
      gate_up_ = &tensor_with_shape(store, m + "experts.gate_up_proj", {count_, 2 * width_, H});
      down_ = &tensor_with_shape(store, m + "experts.down_proj", {count_, H, width_});
      consumed_ = {gate_up_->name, down_->name};
    } else {
      for (int64_t e = 0; e < count_; ++e) {
        const FfnNames n = expert_names(c, layer, e);
        const io::TensorInfo& g = tensor_with_shape(store, n.gate, {width_, H});
        const io::TensorInfo& u = tensor_with_shape(store, n.up, {width_, H});
        const io::TensorInfo& d = tensor_with_shape(store, n.down, {H, width_});
        if (g.dtype != u.dtype) fail("'{}' and '{}' have different dtypes", n.gate, n.up);
        if (!per_expert_.empty() &&
            (g.dtype != per_expert_[0].gate->dtype || d.dtype != per_expert_[0].down->dtype))
          fail("the experts of layer {} do not share one dtype per projection", layer);
        per_expert_.push_back({&g, &u, &d});
        consumed_.insert(consumed_.end(), {n.gate, n.up, n.down});
      }
    }
  }
  bool fused() const { return gate_up_ != nullptr; }
  DType gate_dtype() const { return fused() ? *gate_up_->dtype : *per_expert_[0].gate->dtype; }
  DType down_dtype() const { return fused() ? *down_->dtype : *per_expert_[0].down->dtype; }
  const io::TensorInfo& gate_like() const { return fused() ? *gate_up_ : *per_expert_[0].gate; }
  const io::TensorInfo& down_like() const { return fused() ? *down_ : *per_expert_[0].down; }
  const std::vector<std::string>& consumed() const { return consumed_; }

  ExpertRows expert(int64_t e) const {
    const int64_t H = c_.hidden_size;
    if (fused()) {
      const size_t ge = dtype_size(gate_dtype()), de = dtype_size(down_dtype());
      const auto* gate =
          static_cast<const uint8_t*>(gate_up_->data) + size_t(e * 2 * width_ * H) * ge;
      return {gate, gate + size_t(width_ * H) * ge,
              static_cast<const uint8_t*>(down_->data) + size_t(e * H * width_) * de};
    }
    const Tensors& t = per_expert_[size_t(e)];
    return {static_cast<const uint8_t*>(t.gate->data), static_cast<const uint8_t*>(t.up->data),
            static_cast<const uint8_t*>(t.down->data)};
  }

 private:
  struct Tensors {
    const io::TensorInfo *gate, *up, *down;
  };

  const ModelConfig& c_;
  int64_t count_, width_;
  const io::TensorInfo *gate_up_ = nullptr, *down_ = nullptr;
  std::vector<Tensors> per_expert_;
  std::vector<std::string> consumed_;
};

// The output's experts of one layer, in the layout the source used.
class NewExperts {
 public:
  NewExperts(RewrittenTensors& out, const StoredExperts& like, const ModelConfig& c, int64_t layer,
             int64_t count, int64_t width) {
    const size_t ge = dtype_size(like.gate_dtype()), de = dtype_size(like.down_dtype());
    const int64_t H = c.hidden_size;
    if (like.fused()) {
      uint8_t* gate_up = out.add(like.gate_like().name, like.gate_like(), {count, 2 * width, H},
                                 size_t(count * 2 * width * H) * ge);
      uint8_t* down = out.add(like.down_like().name, like.down_like(), {count, H, width},
                              size_t(count * H * width) * de);
      for (int64_t e = 0; e < count; ++e) {
        uint8_t* g = gate_up + size_t(e * 2 * width * H) * ge;
        experts_.push_back({g, g + size_t(width * H) * ge, down + size_t(e * H * width) * de});
      }
      return;
    }
    for (int64_t e = 0; e < count; ++e) {
      const FfnNames n = expert_names(c, layer, e);
      uint8_t* g = out.add(n.gate, like.gate_like(), {width, H}, size_t(width * H) * ge);
      uint8_t* u = out.add(n.up, like.gate_like(), {width, H}, size_t(width * H) * ge);
      uint8_t* d = out.add(n.down, like.down_like(), {H, width}, size_t(H * width) * de);
      experts_.push_back({g, u, d});
    }
  }
  const MutableExpertRows& expert(int64_t e) const { return experts_[size_t(e)]; }

 private:
  std::vector<MutableExpertRows> experts_;
};

// Neuron `from` of an expert of width `from_width` becomes neuron `to` of one of width
// `to_width`: its gate and up rows are copied, its down column scaled by `scale`.
void move_neuron(const ExpertRows& src, int64_t from_width, int64_t from,
                 const MutableExpertRows& dst, int64_t to_width, int64_t to, int64_t H,
                 DType gate_dtype, DType down_dtype, float scale) {
  const size_t row = size_t(H) * dtype_size(gate_dtype);
  std::memcpy(dst.gate + size_t(to) * row, src.gate + size_t(from) * row, row);
  std::memcpy(dst.up + size_t(to) * row, src.up + size_t(from) * row, row);
  const size_t es = dtype_size(down_dtype);
  for (int64_t h = 0; h < H; ++h)
    scale_element(down_dtype, src.down + size_t(h * from_width + from) * es,
                  dst.down + size_t(h * to_width + to) * es, scale);
}

void check_order(const std::vector<int32_t>& order, int64_t I, int64_t layer, int64_t expert) {
  if (int64_t(order.size()) != I)
    fail("neuron order of layer {} expert {} has {} entries; the expert has {} neurons", layer,
         expert, order.size(), I);
  std::vector<bool> seen(size_t(I), false);
  for (int32_t n : order) {
    if (n < 0 || n >= I || seen[size_t(n)])
      fail("neuron order of layer {} expert {} is not a permutation of 0..{}", layer, expert,
           I - 1);
    seen[size_t(n)] = true;
  }
}

constexpr const char* kOrderFile = "expert_partition.safetensors";
std::string order_tensor_name(int64_t layer) {
  return "layers." + std::to_string(layer) + ".neuron_order";
}

// The gate's router tensors of an MoE layer: the weight and, when present, the selection bias
// and the noisy-gating projection.
std::vector<const io::TensorInfo*> router_tensors(const io::TensorStore& store,
                                                  const ModelConfig& c, int64_t layer,
                                                  int64_t rows) {
  const std::string m = moe_prefix(c, layer);
  std::vector<const io::TensorInfo*> out{
      &tensor_with_shape(store, m + "gate.weight", {rows, c.hidden_size})};
  for (const char* extra : {"gate.e_score_correction_bias", "gate.noise.weight"}) {
    const io::TensorInfo* t = store.find(m + extra);
    if (!t) continue;
    if (t->shape.empty() || t->shape[0] != rows)
      fail("tensor '{}' has shape {}; expected {} rows", t->name, t->shape_str(), rows);
    out.push_back(t);
  }
  return out;
}

// The family's expert-count, top-k, width (and shared-count) keys set to describe `c` with
// `experts` experts of width `width` and top-k `top_k`; `shared_mult` scales the shared count.
void set_expert_keys(nlohmann::json& config, const ModelConfig& c, int64_t experts, int64_t top_k,
                     int64_t width, double shared_mult) {
  const FamilyInfo& f = family_info(c.family);
  config[std::string(f.experts_key)] = experts;
  config["num_experts_per_tok"] = top_k;
  config[std::string(f.expert_ffn_key)] = width;
  if (!f.shared_count_key.empty() && config.contains(f.shared_count_key))  // keep its width
    config[std::string(f.shared_count_key)] = int64_t(
        std::llround(double(config[std::string(f.shared_count_key)].get<int64_t>()) * shared_mult));
}

int64_t count_moe_layers(const ModelConfig& c) {
  int64_t n = 0;
  for (bool m : c.layer_is_moe) n += m ? 1 : 0;
  return n;
}

// DBRX keeps every expert in three fused [E * I, H] tensors, GPT-OSS and Llama 4 theirs
// transposed ([E, H, 2I]); the rewriters here work on the per-expert or [E, 2I, H] layouts of
// the other families.
void refuse_fused_layout(const ModelConfig& c, const std::string& model_dir) {
  if (c.family == Family::kDbrx || c.family == Family::kGptOss || c.family == Family::kLlama4)
    fail(
        "'{}' is a {} checkpoint, whose experts are stored {}; partition and pad do not "
        "rewrite that layout yet",
        model_dir, c.family_name(),
        c.family == Family::kDbrx ? "fused as w1 / v1 / w2" : "transposed (gate_up [E, H, 2I])");
}

}  // namespace

PartitionSummary partition_experts(const std::string& model_dir, const std::string& out_dir,
                                   const PartitionOptions& o) {
  const ModelConfig c = load_config(model_dir);
  refuse_fused_layout(c, model_dir);
  const int P = o.factor;
  const int64_t E = c.router.num_experts, K = c.router.top_k, I = c.expert_intermediate_size;
  const int64_t H = c.hidden_size, w = I / P;
  const int64_t moe_layers = count_moe_layers(c);
  if (E == 0 || moe_layers == 0) fail("'{}' has no routed experts to partition", model_dir);
  if (c.router.sub_experts > 1)
    fail("'{}' is already partitioned ({} parts per expert); merge it first (partition --merge)",
         model_dir, c.router.sub_experts);
  if (P < 2) fail("--factor must be at least 2, got {}", P);
  if (I % P != 0) fail("--factor {} does not divide the experts' FFN width {} (config.json)", P, I);
  if (E * P > 65536) fail("--factor {} makes {} experts per layer; at most 65536", P, E * P);
  if (!o.partial && c.router.num_groups > 1)
    fail(
        "'{}' routes within expert groups (n_group {}): repeating experts changes the groups' "
        "scores, so the complete transformation would not be exact; the partial one "
        "(--mode partial) keeps the gate",
        model_dir, c.router.num_groups);
  if (!o.neuron_order.empty() && int64_t(o.neuron_order.size()) != c.num_layers)
    fail("the neuron order covers {} layers; the model has {}", o.neuron_order.size(),
         c.num_layers);
  if (fs::exists(out_dir)) fail("'{}' exists; partition writes a new folder", out_dir);

  const io::TensorStore store = io::TensorStore::open(model_dir);
  // The partial transformation keeps the gate and each part's weight is the expert's, so the
  // down projections stay as they are.
  const float scale = o.partial ? 1.0f : weight_divisor(c.router, P);
  RewrittenTensors out;
  std::map<std::string, bool> replaced;
  std::vector<int32_t> natural(static_cast<size_t>(I));
  std::iota(natural.begin(), natural.end(), 0);
  std::deque<std::vector<int32_t>> orders_written;  // [layer] -> [E, I], for the merge
  std::vector<io::TensorToWrite> order_tensors;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[size_t(l)]) continue;
    for (const io::TensorInfo* t : router_tensors(store, c, l, E)) {
      if (o.partial) continue;  // kept as they are
      repeat_rows(out, *t, P);
      replaced[t->name] = true;
    }
    const StoredExperts src(store, c, l);
    for (const std::string& n : src.consumed()) replaced[n] = true;
    const NewExperts dst(out, src, c, l, E * P, w);
    const bool ordered = !o.neuron_order.empty() && !o.neuron_order[size_t(l)].empty();
    if (ordered && int64_t(o.neuron_order[size_t(l)].size()) != E)
      fail("the neuron order of layer {} covers {} experts; the layer has {}", l,
           o.neuron_order[size_t(l)].size(), E);
    if (!o.neuron_order.empty()) orders_written.emplace_back().reserve(size_t(E * I));
    for (int64_t e = 0; e < E; ++e) {
      const std::vector<int32_t>& order = ordered ? o.neuron_order[size_t(l)][size_t(e)] : natural;
      if (ordered) check_order(order, I, l, e);
      if (!o.neuron_order.empty())
        orders_written.back().insert(orders_written.back().end(), order.begin(), order.end());
      for (int p = 0; p < P; ++p)
        for (int64_t j = 0; j < w; ++j)
          move_neuron(src.expert(e), I, order[size_t(p * w + j)], dst.expert(e * P + p), w, j, H,
                      src.gate_dtype(), src.down_dtype(), scale);
    }
    if (!o.neuron_order.empty())
      order_tensors.push_back({order_tensor_name(l),
                               "I32",
                               {E, I},
                               orders_written.back().data(),
                               orders_written.back().size() * 4});
  }
  for (const auto& [name, t] : store.all())
    if (!replaced.count(name)) out.keep(*t);

  nlohmann::json config = nlohmann::json::parse(io::read_text_file(model_dir + "/config.json"));
  set_expert_keys(config, c, E * P, K * P, w, P);
  config["expert_partition"] = {{"factor", P},         {"mode", o.partial ? "partial" : "complete"},
                                {"source_experts", E}, {"source_top_k", K},
                                {"down_scale", scale}, {"reconstructed", !o.neuron_order.empty()}};
  // The rewritten config must describe the same model with partitioned experts.
  const ModelConfig pc = parse_config(config.dump(), "the partitioned config.json");
  SY_ASSERT_MSG(pc.router.num_experts == E * P && pc.router.top_k == K * P &&
                    pc.router.num_logits() == (o.partial ? E : E * P) &&
                    pc.expert_intermediate_size == w &&
                    pc.shared_intermediate_size == c.shared_intermediate_size &&
                    pc.layer_is_moe == c.layer_is_moe,
                "partition: the family's config keys do not describe the partitioned model");
  std::vector<std::pair<std::string, std::string>> extra;
  if (!order_tensors.empty())  // what a merge needs to put every neuron back where it was
    extra.emplace_back(kOrderFile, io::serialize_safetensors(
                                       order_tensors, {{"format", "switchyard-neuron-order"}}));
  write_rewritten_model(model_dir, out_dir, config, out, extra);

  PartitionSummary s;
  s.experts_before = E, s.experts_after = E * P;
  s.top_k_before = K, s.top_k_after = K * P;
  s.width_before = I, s.width_after = w;
  s.down_scale = scale;
  s.moe_layers = moe_layers;
  s.tensors_written = int64_t(out.tensors.size());
  return s;
}

PartitionSummary merge_experts(const std::string& model_dir, const std::string& out_dir) {
  const ModelConfig c = load_config(model_dir);
  refuse_fused_layout(c, model_dir);
  const int P = c.router.sub_experts;
  if (P < 2)
    fail("'{}' is not a partitioned model (no expert_partition in config.json)", model_dir);
  if (fs::exists(out_dir)) fail("'{}' exists; merge writes a new folder", out_dir);
  const nlohmann::json source =
      nlohmann::json::parse(io::read_text_file(model_dir + "/config.json"));
  const nlohmann::json& info = source["expert_partition"];
  const float scale = info.contains("down_scale") && info["down_scale"].is_number()
                          ? info["down_scale"].get<float>()
                          : 1.0f;
  if (!(scale > 0) || !std::isfinite(scale))
    fail("'{}': expert_partition down_scale {} is not a positive number", model_dir, scale);
  const int64_t Ew = c.router.num_experts, E = Ew / P, K = c.router.top_k / P;
  const int64_t w = c.expert_intermediate_size, I = w * P, H = c.hidden_size;

  const io::TensorStore store = io::TensorStore::open(model_dir);
  std::unique_ptr<io::SafetensorsFile> orders;
  if (c.partition_reconstructed) {
    const std::string path = model_dir + "/" + kOrderFile;
    if (!io::file_exists(path))
      fail("'{}' was reconstructed (neurons sorted by importance) but has no {} to undo it",
           model_dir, kOrderFile);
    orders = std::make_unique<io::SafetensorsFile>(path);
  }
  auto order_of = [&](int64_t l) -> const int32_t* {
    if (!orders) return nullptr;
    for (const io::TensorInfo& t : orders->tensors())
      if (t.name == order_tensor_name(l)) {
        if (t.dtype_name != "I32" || t.shape != std::vector<int64_t>{E, I})
          fail("{}: tensor '{}' is {} {}; expected I32 [{}, {}]", orders->path(), t.name,
               t.dtype_name, t.shape_str(), E, I);
        const auto* o = static_cast<const int32_t*>(t.data);
        for (int64_t e = 0; e < E; ++e)
          check_order(std::vector<int32_t>(o + e * I, o + (e + 1) * I), I, l, e);
        return o;
      }
    fail("{} has no tensor '{}'", orders->path(), order_tensor_name(l));
  };

  RewrittenTensors out;
  std::map<std::string, bool> replaced;
  ModelConfig merged = c;  // the experts the output holds, for their tensor names
  merged.router.num_experts = int(E);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[size_t(l)]) continue;
    for (const io::TensorInfo* t : router_tensors(store, c, l, c.router.num_logits())) {
      if (c.router.expand_parts) continue;  // the partial transformation kept the gate
      unrepeat_rows(out, *t, P);
      replaced[t->name] = true;
    }
    const StoredExperts src(store, c, l);
    for (const std::string& n : src.consumed()) replaced[n] = true;
    const NewExperts dst(out, src, merged, l, E, I);
    const int32_t* order = order_of(l);
    for (int64_t e = 0; e < E; ++e)
      for (int p = 0; p < P; ++p)
        for (int64_t j = 0; j < w; ++j) {
          const int64_t n = p * w + j;
          move_neuron(src.expert(e * P + p), w, j, dst.expert(e), I, order ? order[e * I + n] : n,
                      H, src.gate_dtype(), src.down_dtype(), 1.0f / scale);
        }
  }
  for (const auto& [name, t] : store.all())
    if (!replaced.count(name)) out.keep(*t);

  nlohmann::json config = source;
  config.erase("expert_partition");
  set_expert_keys(config, c, E, K, I, 1.0 / P);
  const ModelConfig mc = parse_config(config.dump(), "the merged config.json");
  SY_ASSERT_MSG(mc.router.num_experts == E && mc.router.top_k == K &&
                    mc.expert_intermediate_size == I && mc.router.sub_experts == 1 &&
                    mc.shared_intermediate_size == c.shared_intermediate_size,
                "merge: the family's config keys do not describe the merged model");
  write_rewritten_model(model_dir, out_dir, config, out);

  PartitionSummary s;
  s.experts_before = Ew, s.experts_after = E;
  s.top_k_before = c.router.top_k, s.top_k_after = K;
  s.width_before = w, s.width_after = I;
  s.down_scale = 1.0f / scale;
  s.moe_layers = count_moe_layers(c);
  s.tensors_written = int64_t(out.tensors.size());
  return s;
}

PartitionSummary pad_experts(const std::string& model_dir, const std::string& out_dir,
                             int64_t width) {
  const ModelConfig c = load_config(model_dir);
  refuse_fused_layout(c, model_dir);
  const int64_t E = c.router.num_experts, I = c.expert_intermediate_size, H = c.hidden_size;
  if (E == 0 || count_moe_layers(c) == 0) fail("'{}' has no routed experts to pad", model_dir);
  if (c.router.sub_experts > 1)
    fail("'{}' is partitioned ({} parts per expert); merge it first (partition --merge)", model_dir,
         c.router.sub_experts);
  if (width <= I)
    fail("the padded width {} must exceed the experts' FFN width {} (config.json)", width, I);
  if (fs::exists(out_dir)) fail("'{}' exists; padding writes a new folder", out_dir);

  const io::TensorStore store = io::TensorStore::open(model_dir);
  RewrittenTensors out;
  std::map<std::string, bool> replaced;
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[size_t(l)]) continue;
    const StoredExperts src(store, c, l);
    for (const std::string& n : src.consumed()) replaced[n] = true;
    const NewExperts dst(out, src, c, l, E, width);  // zeroed: neurons I .. width stay zero
    for (int64_t e = 0; e < E; ++e)
      for (int64_t j = 0; j < I; ++j)
        move_neuron(src.expert(e), I, j, dst.expert(e), width, j, H, src.gate_dtype(),
                    src.down_dtype(), 1.0f);
  }
  for (const auto& [name, t] : store.all())
    if (!replaced.count(name)) out.keep(*t);

  nlohmann::json config = nlohmann::json::parse(io::read_text_file(model_dir + "/config.json"));
  set_expert_keys(config, c, E, c.router.top_k, width, 1.0);
  const ModelConfig pc = parse_config(config.dump(), "the padded config.json");
  SY_ASSERT_MSG(pc.expert_intermediate_size == width && pc.router.num_experts == E &&
                    pc.shared_intermediate_size == c.shared_intermediate_size,
                "pad: the family's config keys do not describe the padded model");
  write_rewritten_model(model_dir, out_dir, config, out);

  PartitionSummary s;
  s.experts_before = s.experts_after = E;
  s.top_k_before = s.top_k_after = c.router.top_k;
  s.width_before = I, s.width_after = width;
  s.moe_layers = count_moe_layers(c);
  s.tensors_written = int64_t(out.tensors.size());
  return s;
}

}  // namespace sy::model
