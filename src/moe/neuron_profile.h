// Neuron importance of routed experts (DualSparse-MoE, papers.md section 6), accumulated over
// the (token, expert) pairs the router selects. With a = x . w1_n (the gate projection) and
// b = x . w3_n (the up projection) of neuron n, the four metrics are
//   silu: sum silu(a)   abs_silu: sum |silu(a)|   silu_up: sum silu(a) b   abs_silu_up: sum
//   |silu(a) b|
// Expert reconstruction sorts an expert's neurons by one of them (model/expert_partition.h).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "moe/expert_ffn.h"
#include "moe/routing_observer.h"

namespace sy::moe {

enum class NeuronMetric : int { kSilu = 0, kAbsSilu = 1, kSiluUp = 2, kAbsSiluUp = 3 };
constexpr int kNeuronMetrics = 4;
NeuronMetric parse_neuron_metric(std::string_view name);  // sy::Error listing the names

class NeuronProfiler : public RoutingObserver {
 public:
  // experts[layer]: that layer's routed experts (empty for a dense layer).
  explicit NeuronProfiler(std::vector<std::vector<FfnWeights>> experts);
  void observe(const RoutingRecord& record) override;

  // pairs(layer)[e]: (token, expert) pairs seen.
  const std::vector<int64_t>& pairs(int layer) const { return pairs_[size_t(layer)]; }
  // Writes one safetensors file: "layers.L.neuron_importance" [E, 4, I] and
  // "layers.L.pairs" [E] (float32) per MoE layer, with the model's shape in the metadata.
  void save(const std::string& path, const std::string& architecture) const;

 private:
  std::vector<std::vector<FfnWeights>> experts_;
  std::vector<std::vector<double>> sums_;
  std::vector<std::vector<int64_t>> pairs_;
  std::vector<float> rows_, gate_, up_;
};

// The importance file's sums for one metric: [layer][expert] -> I values (empty for dense
// layers). sy::Error when the file does not fit a model with these MoE layers and shapes.
std::vector<std::vector<std::vector<float>>> load_neuron_importance(
    const std::string& path, const std::vector<bool>& layer_is_moe, int64_t num_experts,
    int64_t expert_ffn, NeuronMetric metric);

}  // namespace sy::moe
