#include "model/expert_partition.h"

#include <unistd.h>

#include <cstring>
#include <deque>
#include <filesystem>
#include <numeric>

#include <nlohmann/json.hpp>

#include "io/file_util.h"
#include "io/safetensors.h"
#include "model/config.h"
#include "model/family.h"
#include "model/tensor_names.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::model {

namespace fs = std::filesystem;

namespace {

// What the router's weights for one of P copies are divided by (see the header).
float weight_divisor(const moe::RouterConfig& r, int factor) {
  const bool softmax =
      r.score == moe::ScoreFunc::kSoftmax || r.score == moe::ScoreFunc::kSoftmaxTopK;
  return softmax || r.renormalize ? float(factor) : 1.0f;
}

// The tensors of the new checkpoint: unchanged ones point into the source's mapping, new ones
// into `owned`.
struct Output {
  std::vector<io::TensorToWrite> tensors;
  std::deque<std::vector<uint8_t>> owned;

  void keep(const io::TensorInfo& t) {
    tensors.push_back({t.name, t.dtype_name, t.shape, t.data, t.nbytes});
  }
  uint8_t* add(const std::string& name, const io::TensorInfo& like, std::vector<int64_t> shape,
               size_t nbytes) {
    owned.emplace_back(nbytes);
    tensors.push_back({name, like.dtype_name, std::move(shape), owned.back().data(), nbytes});
    return owned.back().data();
  }
};

const io::TensorInfo& tensor_of(const io::TensorStore& store, const std::string& name,
                                std::vector<int64_t> shape) {
  const io::TensorInfo& t = store.get(name);
  if (t.shape != shape)
    fail("tensor '{}' has shape {} but config.json implies [{}]", name, t.shape_str(),
         fmt::join(shape, ", "));
  if (!t.dtype)
    fail("tensor '{}' has dtype {}, which partition cannot rewrite", name, t.dtype_name);
  return t;
}

// Rows of a [rows, cols] tensor repeated `factor` times each: [rows * factor, cols].
void repeat_rows(Output& out, const io::TensorInfo& t, int factor) {
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

// dst = src * scale in the tensor's dtype (a plain copy when scale is 1).
void scale_element(DType dtype, const uint8_t* src, uint8_t* dst, float scale) {
  const size_t n = dtype_size(dtype);
  if (scale == 1.0f) {
    std::memcpy(dst, src, n);
    return;
  }
  switch (dtype) {
    case DType::F32: {
      float v;
      std::memcpy(&v, src, 4);
      v *= scale;
      std::memcpy(dst, &v, 4);
      return;
    }
    case DType::BF16: {
      uint16_t h;
      std::memcpy(&h, src, 2);
      h = f32_to_bf16(bf16_to_f32(h) * scale);
      std::memcpy(dst, &h, 2);
      return;
    }
    case DType::F16: {
      uint16_t h;
      std::memcpy(&h, src, 2);
      h = f32_to_f16(f16_to_f32(h) * scale);
      std::memcpy(dst, &h, 2);
      return;
    }
  }
  fail("partition cannot scale dtype {}", dtype_name(dtype));
}

// One expert's projections in the source (gate / up: [I, H] rows; down: [H, I]) and one
// sub-expert's in the output (gate / up: [w, H]; down: [H, w]), in either layout.
struct ExpertRows {
  const uint8_t *gate = nullptr, *up = nullptr, *down = nullptr;
};
struct SubExpertRows {
  uint8_t *gate = nullptr, *up = nullptr, *down = nullptr;
};

// Sub-expert p of an expert: its neurons order[p w .. (p + 1) w), down projection scaled.
void split_expert(const ExpertRows& src, const SubExpertRows& dst, DType gate_dtype,
                  DType down_dtype, int64_t H, int64_t I, int64_t w, int p,
                  const std::vector<int32_t>& order, float scale) {
  const size_t row_bytes = size_t(H) * dtype_size(gate_dtype);
  for (int64_t j = 0; j < w; ++j) {
    const size_t from = size_t(order[size_t(p * w + j)]) * row_bytes;
    std::memcpy(dst.gate + size_t(j) * row_bytes, src.gate + from, row_bytes);
    std::memcpy(dst.up + size_t(j) * row_bytes, src.up + from, row_bytes);
  }
  const size_t es = dtype_size(down_dtype);
  for (int64_t h = 0; h < H; ++h)
    for (int64_t j = 0; j < w; ++j)
      scale_element(down_dtype, src.down + size_t(h * I + order[size_t(p * w + j)]) * es,
                    dst.down + size_t(h * w + j) * es, scale);
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

// Writes `out` and the source's other files into a temporary folder, then renames it.
void write_model_dir(const std::string& model_dir, const std::string& out_dir,
                     const nlohmann::json& config, const Output& out) {
  const fs::path tmp = out_dir + ".partial-" + std::to_string(::getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  try {
    fs::create_directories(tmp);
    io::write_text_file_atomic((tmp / "config.json").string(), config.dump(2) + "\n");
    io::write_safetensors((tmp / "model.safetensors").string(), out.tensors);
    for (const fs::directory_entry& f : fs::directory_iterator(model_dir)) {
      const std::string name = f.path().filename().string();
      if (!f.is_regular_file() || name == "config.json" || name.ends_with(".safetensors") ||
          name == "model.safetensors.index.json")
        continue;
      fs::copy_file(f.path(), tmp / name);
    }
    fs::rename(tmp, out_dir);
  } catch (const fs::filesystem_error& e) {
    fs::remove_all(tmp, ec);
    fail("cannot write '{}': {}", out_dir, e.what());
  } catch (...) {
    fs::remove_all(tmp, ec);
    throw;
  }
}

}  // namespace

PartitionSummary partition_experts(const std::string& model_dir, const std::string& out_dir,
                                   const PartitionOptions& o) {
  const ModelConfig c = load_config(model_dir);
  const int P = o.factor;
  const int64_t E = c.router.num_experts, K = c.router.top_k, I = c.expert_intermediate_size;
  int64_t moe_layers = 0;
  for (bool m : c.layer_is_moe) moe_layers += m ? 1 : 0;
  if (E == 0 || moe_layers == 0) fail("'{}' has no routed experts to partition", model_dir);
  if (P < 2) fail("--factor must be at least 2, got {}", P);
  if (I % P != 0) fail("--factor {} does not divide the experts' FFN width {} (config.json)", P, I);
  if (E * P > 65536) fail("--factor {} makes {} experts per layer; at most 65536", P, E * P);
  if (c.router.num_groups > 1)
    fail(
        "'{}' routes within expert groups (n_group {}): repeating experts changes the groups' "
        "scores, so the complete transformation would not be exact",
        model_dir, c.router.num_groups);
  if (!o.neuron_order.empty() && int64_t(o.neuron_order.size()) != c.num_layers)
    fail("the neuron order covers {} layers; the model has {}", o.neuron_order.size(),
         c.num_layers);
  if (fs::exists(out_dir)) fail("'{}' exists; partition writes a new folder", out_dir);

  const io::TensorStore store = io::TensorStore::open(model_dir);
  const float scale = weight_divisor(c.router, P);
  Output out;
  std::map<std::string, bool> replaced;
  std::vector<int32_t> natural(static_cast<size_t>(I));
  std::iota(natural.begin(), natural.end(), 0);
  for (int64_t l = 0; l < c.num_layers; ++l) {
    if (!c.layer_is_moe[size_t(l)]) continue;
    const std::string m = moe_prefix(c, l);
    repeat_rows(out, tensor_of(store, m + "gate.weight", {E, c.hidden_size}), P);
    replaced[m + "gate.weight"] = true;
    for (const char* extra : {"gate.e_score_correction_bias", "gate.noise.weight"}) {
      const io::TensorInfo* t = store.find(m + extra);
      if (!t) continue;
      if (t->shape.empty() || t->shape[0] != E)
        fail("tensor '{}' has shape {}; expected {} rows", t->name, t->shape_str(), E);
      repeat_rows(out, *t, P);
      replaced[t->name] = true;
    }
    // transformers v5 stores a layer's experts fused: gate_up_proj [E, 2I, H] (gate rows
    // first), down_proj [E, H, I]; the output keeps the layout it found.
    const int64_t H = c.hidden_size, w = I / P;
    const bool fused = store.find(m + "experts.gate_up_proj") != nullptr;
    const io::TensorInfo *gate_up = nullptr, *fused_down = nullptr;
    uint8_t *out_gate_up = nullptr, *out_down = nullptr;
    if (fused) {
      gate_up = &tensor_of(store, m + "experts.gate_up_proj", {E, 2 * I, H});
      fused_down = &tensor_of(store, m + "experts.down_proj", {E, H, I});
      out_gate_up = out.add(gate_up->name, *gate_up, {E * P, 2 * w, H}, gate_up->nbytes);
      out_down = out.add(fused_down->name, *fused_down, {E * P, H, w}, fused_down->nbytes);
      replaced[gate_up->name] = replaced[fused_down->name] = true;
    }
    for (int64_t e = 0; e < E; ++e) {
      const std::vector<int32_t>* order = &natural;
      if (!o.neuron_order.empty() && !o.neuron_order[size_t(l)].empty()) {
        if (int64_t(o.neuron_order[size_t(l)].size()) != E)
          fail("the neuron order of layer {} covers {} experts; the layer has {}", l,
               o.neuron_order[size_t(l)].size(), E);
        order = &o.neuron_order[size_t(l)][size_t(e)];
        check_order(*order, I, l, e);
      }
      ExpertRows src;
      DType gate_dtype, down_dtype;
      const FfnNames names = expert_names(c, l, e);
      if (fused) {
        gate_dtype = *gate_up->dtype, down_dtype = *fused_down->dtype;
        const auto* gu = static_cast<const uint8_t*>(gate_up->data);
        const size_t es = dtype_size(gate_dtype);
        src.gate = gu + size_t(e * 2 * I * H) * es;
        src.up = src.gate + size_t(I * H) * es;
        src.down = static_cast<const uint8_t*>(fused_down->data) +
                   size_t(e * H * I) * dtype_size(down_dtype);
      } else {
        const io::TensorInfo& g = tensor_of(store, names.gate, {I, H});
        const io::TensorInfo& u = tensor_of(store, names.up, {I, H});
        const io::TensorInfo& d = tensor_of(store, names.down, {H, I});
        if (g.dtype != u.dtype) fail("'{}' and '{}' have different dtypes", names.gate, names.up);
        gate_dtype = *g.dtype, down_dtype = *d.dtype;
        src = {static_cast<const uint8_t*>(g.data), static_cast<const uint8_t*>(u.data),
               static_cast<const uint8_t*>(d.data)};
        for (const std::string& n : {names.gate, names.up, names.down}) replaced[n] = true;
      }
      const size_t ge = dtype_size(gate_dtype), de = dtype_size(down_dtype);
      for (int p = 0; p < P; ++p) {
        const int64_t q = e * P + p;
        SubExpertRows dst;
        if (fused) {
          dst.gate = out_gate_up + size_t(q * 2 * w * H) * ge;
          dst.up = dst.gate + size_t(w * H) * ge;
          dst.down = out_down + size_t(q * H * w) * de;
        } else {
          const FfnNames sub = expert_names(c, l, q);
          const io::TensorInfo& g = store.get(names.gate);
          const io::TensorInfo& d = store.get(names.down);
          dst.gate = out.add(sub.gate, g, {w, H}, size_t(w * H) * ge);
          dst.up = out.add(sub.up, g, {w, H}, size_t(w * H) * ge);
          dst.down = out.add(sub.down, d, {H, w}, size_t(H * w) * de);
        }
        split_expert(src, dst, gate_dtype, down_dtype, H, I, w, p, *order, scale);
      }
    }
  }
  for (const auto& [name, t] : store.all())
    if (!replaced.count(name)) out.keep(*t);

  nlohmann::json config = nlohmann::json::parse(io::read_text_file(model_dir + "/config.json"));
  const FamilyInfo& f = family_info(c.family);
  config[std::string(f.experts_key)] = E * P;
  config["num_experts_per_tok"] = K * P;
  config[std::string(f.expert_ffn_key)] = I / P;
  if (!f.shared_count_key.empty() && config.contains(f.shared_count_key))  // keep its width
    config[std::string(f.shared_count_key)] =
        config[std::string(f.shared_count_key)].get<int64_t>() * P;
  // The rewritten config must describe the same model with partitioned experts.
  const ModelConfig pc = parse_config(config.dump(), "the partitioned config.json");
  SY_ASSERT_MSG(pc.router.num_experts == E * P && pc.router.top_k == K * P &&
                    pc.expert_intermediate_size == I / P &&
                    pc.shared_intermediate_size == c.shared_intermediate_size &&
                    pc.layer_is_moe == c.layer_is_moe,
                "partition: the family's config keys do not describe the partitioned model");
  config["expert_partition"] = {{"factor", P},         {"mode", "complete"},
                                {"source_experts", E}, {"source_top_k", K},
                                {"down_scale", scale}, {"reconstructed", !o.neuron_order.empty()}};
  write_model_dir(model_dir, out_dir, config, out);

  PartitionSummary s;
  s.experts_before = E, s.experts_after = E * P;
  s.top_k_before = K, s.top_k_after = K * P;
  s.width_before = I, s.width_after = I / P;
  s.down_scale = scale;
  s.moe_layers = moe_layers;
  s.tensors_written = int64_t(out.tensors.size());
  return s;
}

}  // namespace sy::model
