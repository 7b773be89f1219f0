// Expert load per layer: how many (token, expert) pairs each expert received, and the
// straggler ratio max/mean that expert parallelism pays for (the busiest expert sets the pace).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

namespace sy::moe {

class LoadStats {
 public:
  LoadStats() = default;
  LoadStats(int num_layers, int num_experts);

  void add(int layer, int expert, int64_t count = 1) {
    counts_[size_t(layer) * size_t(num_experts_) + size_t(expert)] += count;
  }
  int64_t count(int layer, int expert) const {
    return counts_[size_t(layer) * size_t(num_experts_) + size_t(expert)];
  }
  int num_layers() const { return num_layers_; }
  int num_experts() const { return num_experts_; }
  bool layer_active(int layer) const;  // received any tokens (dense layers never do)
  // max/mean of the layer's expert loads; 1.0 is perfect balance, 0 when the layer is empty.
  double max_over_mean(int layer) const;

  // A table: one row per MoE layer, one column per expert (or a compact summary when there
  // are more than `max_columns` experts), then max/mean.
  std::string table(int max_columns = 16) const;
  nlohmann::json to_json() const;

 private:
  int num_layers_ = 0;
  int num_experts_ = 0;
  std::vector<int64_t> counts_;  // [layers, experts]
};

}  // namespace sy::moe
