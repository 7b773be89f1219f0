#include "moe/neuron_profile.h"

#include <cmath>
#include <cstring>

#include <fmt/format.h>

#include "io/safetensors.h"
#include "ops/matmul.h"
#include "util/error.h"

namespace sy::moe {

namespace {

constexpr std::string_view kNames[kNeuronMetrics] = {"silu", "abs_silu", "silu_up", "abs_silu_up"};

std::string tensor_name(int64_t layer, const char* what) {
  return fmt::format("layers.{}.{}", layer, what);
}

}  // namespace

NeuronMetric parse_neuron_metric(std::string_view name) {
  for (int i = 0; i < kNeuronMetrics; ++i)
    if (kNames[i] == name) return NeuronMetric(i);
  fail("unknown neuron metric '{}'; expected silu, abs_silu, silu_up or abs_silu_up", name);
}

NeuronProfiler::NeuronProfiler(std::vector<std::vector<FfnWeights>> experts)
    : experts_(std::move(experts)), sums_(experts_.size()), pairs_(experts_.size()) {
  for (size_t l = 0; l < experts_.size(); ++l) {
    if (experts_[l].empty()) continue;
    const int64_t E = int64_t(experts_[l].size()), I = experts_[l][0].intermediate();
    sums_[l].assign(size_t(E * kNeuronMetrics * I), 0.0);
    pairs_[l].assign(size_t(E), 0);
  }
}

void NeuronProfiler::observe(const RoutingRecord& r) {
  const std::vector<FfnWeights>& experts = experts_.at(size_t(r.layer));
  if (experts.empty() || r.num_tokens == 0) return;
  SY_ASSERT(r.x != nullptr);
  const int64_t H = r.hidden, T = r.num_tokens, K = r.top_k;
  for (int64_t e = 0; e < int64_t(experts.size()); ++e) {
    // The rows of the tokens whose router chose e, one matrix product per projection.
    int64_t n = 0;
    rows_.clear();
    for (int64_t t = 0; t < T; ++t)
      for (int64_t j = 0; j < K; ++j)
        if (r.router_ids[t * K + j] == e) {
          rows_.insert(rows_.end(), r.x + t * H, r.x + (t + 1) * H);
          ++n;
        }
    if (n == 0) continue;
    const FfnWeights& w = experts[size_t(e)];
    const int64_t I = w.intermediate();
    gate_.resize(size_t(n * I));
    up_.resize(size_t(n * I));
    ops::matmul(w.gate, rows_.data(), n, gate_.data());
    ops::matmul(w.up, rows_.data(), n, up_.data());
    double* s = sums_[size_t(r.layer)].data() + e * kNeuronMetrics * I;
    for (int64_t i = 0; i < n; ++i)
      for (int64_t k = 0; k < I; ++k) {
        const double a = gate_[size_t(i * I + k)], b = up_[size_t(i * I + k)];
        const double silu = a / (1.0 + std::exp(-a));
        s[k] += silu;
        s[I + k] += std::abs(silu);
        s[2 * I + k] += silu * b;
        s[3 * I + k] += std::abs(silu * b);
      }
    pairs_[size_t(r.layer)][size_t(e)] += n;
  }
}

void NeuronProfiler::save(const std::string& path, const std::string& architecture) const {
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<float>> data;
  data.reserve(2 * experts_.size());
  int64_t E = 0, I = 0;
  for (size_t l = 0; l < experts_.size(); ++l) {
    if (experts_[l].empty()) continue;
    E = int64_t(experts_[l].size()), I = experts_[l][0].intermediate();
    data.emplace_back(sums_[l].begin(), sums_[l].end());
    tensors.push_back({tensor_name(int64_t(l), "neuron_importance"),
                       "F32",
                       {E, kNeuronMetrics, I},
                       data.back().data(),
                       data.back().size() * 4});
    data.emplace_back(pairs_[l].begin(), pairs_[l].end());
    tensors.push_back(
        {tensor_name(int64_t(l), "pairs"), "F32", {E}, data.back().data(), data.back().size() * 4});
  }
  io::write_safetensors(path, tensors,
                        {{"format", "switchyard-neuron-importance"},
                         {"metrics", "silu,abs_silu,silu_up,abs_silu_up"},
                         {"architecture", architecture},
                         {"num_layers", std::to_string(experts_.size())},
                         {"num_experts", std::to_string(E)},
                         {"expert_ffn", std::to_string(I)}});
}

std::vector<std::vector<std::vector<float>>> load_neuron_importance(
    const std::string& path, const std::vector<bool>& layer_is_moe, int64_t E, int64_t I,
    NeuronMetric metric) {
  const io::SafetensorsFile f(path);
  const auto meta = f.metadata().find("format");
  if (meta == f.metadata().end() || meta->second != "switchyard-neuron-importance")
    fail("'{}' is not a neuron importance file (switchyard profile-neurons writes them)", path);
  const auto layers = f.metadata().find("num_layers");
  if (layers == f.metadata().end() || layers->second != std::to_string(layer_is_moe.size()))
    fail("'{}' was profiled on a model with {} layers; this one has {}", path,
         layers == f.metadata().end() ? "?" : layers->second, layer_is_moe.size());
  std::vector<std::vector<std::vector<float>>> out(layer_is_moe.size());
  for (size_t l = 0; l < layer_is_moe.size(); ++l) {
    if (!layer_is_moe[l]) continue;
    const std::string name = tensor_name(int64_t(l), "neuron_importance");
    const io::TensorInfo* t = nullptr;
    for (const io::TensorInfo& x : f.tensors())
      if (x.name == name) t = &x;
    if (!t)
      fail("'{}' has no importance for MoE layer {}: it was profiled on another model", path, l);
    if (t->shape != std::vector<int64_t>{E, kNeuronMetrics, I} || t->dtype_name != "F32")
      fail(
          "'{}': layer {} importance is {} {}, but this model's experts need F32 [{}, 4, {}]: "
          "it was profiled on another model",
          path, l, t->dtype_name, t->shape_str(), E, I);
    const auto* v = static_cast<const uint8_t*>(t->data);  // may be unaligned: copied
    out[l].resize(size_t(E));
    for (int64_t e = 0; e < E; ++e) {
      out[l][size_t(e)].resize(size_t(I));
      std::memcpy(out[l][size_t(e)].data(), v + size_t((e * kNeuronMetrics + int(metric)) * I) * 4,
                  size_t(I) * 4);
    }
  }
  return out;
}

}  // namespace sy::moe
