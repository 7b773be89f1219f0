#include "moe/load_stats.h"

#include <fmt/format.h>

#include <algorithm>
#include <numeric>

namespace sy::moe {

LoadStats::LoadStats(int num_layers, int num_experts)
    : num_layers_(num_layers), num_experts_(num_experts),
      counts_(size_t(num_layers) * size_t(num_experts), 0) {}

bool LoadStats::layer_active(int layer) const {
  for (int e = 0; e < num_experts_; ++e)
    if (count(layer, e) > 0) return true;
  return false;
}

double LoadStats::max_over_mean(int layer) const {
  int64_t max = 0, sum = 0;
  for (int e = 0; e < num_experts_; ++e) {
    max = std::max(max, count(layer, e));
    sum += count(layer, e);
  }
  return sum == 0 ? 0.0 : double(max) * num_experts_ / double(sum);
}

std::string LoadStats::table(int max_columns) const {
  std::string out;
  const bool full = num_experts_ <= max_columns;
  out += fmt::format("{:>5}", "layer");
  if (full) {
    for (int e = 0; e < num_experts_; ++e) out += fmt::format(" {:>6}", fmt::format("e{}", e));
  } else {
    out += fmt::format(" {:>8} {:>8} {:>8} {:>8} {:>6}", "pairs", "min", "mean", "max", "busiest");
  }
  out += fmt::format(" {:>8}\n", "max/mean");
  double worst = 0;
  int64_t total = 0;
  for (int l = 0; l < num_layers_; ++l) {
    if (!layer_active(l)) continue;
    out += fmt::format("{:>5}", l);
    int64_t sum = 0, mn = INT64_MAX, mx = 0;
    int busiest = 0;
    for (int e = 0; e < num_experts_; ++e) {
      const int64_t c = count(l, e);
      sum += c;
      mn = std::min(mn, c);
      if (c > mx) mx = c, busiest = e;
      if (full) out += fmt::format(" {:>6}", c);
    }
    if (!full)
      out += fmt::format(" {:>8} {:>8} {:>8.1f} {:>8} {:>6}", sum, mn, double(sum) / num_experts_,
                         mx, fmt::format("e{}", busiest));
    out += fmt::format(" {:>8.2f}\n", max_over_mean(l));
    worst = std::max(worst, max_over_mean(l));
    total += sum;
  }
  out += fmt::format("{} (token, expert) pairs routed; worst layer max/mean = {:.2f} (1.00 = balanced)\n",
                     total, worst);
  return out;
}

nlohmann::json LoadStats::to_json() const {
  nlohmann::json layers = nlohmann::json::array();
  for (int l = 0; l < num_layers_; ++l) {
    if (!layer_active(l)) continue;
    std::vector<int64_t> row(counts_.begin() + l * num_experts_,
                             counts_.begin() + (l + 1) * num_experts_);
    layers.push_back({{"layer", l}, {"tokens_per_expert", row}, {"max_over_mean", max_over_mean(l)}});
  }
  return {{"num_experts", num_experts_}, {"layers", layers}};
}

}  // namespace sy::moe
