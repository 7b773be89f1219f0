#include "model/overlap_schedule.h"

#include <cmath>

namespace sy::model {

int choose_expert_slot(std::span<const double> ops, double dispatch_s, double combine_s,
                       bool known) {
  const int n = int(ops.size());
  if (!known) return (n + 1) / 2;
  double total = 0;
  for (double c : ops) total += c;
  int best = 0;
  double best_cost = 0, before = 0;
  for (int k = 0; k <= n; ++k) {
    const double cost = std::abs(before - dispatch_s) + std::abs(total - before - combine_s);
    if (k == 0 || cost < best_cost) best = k, best_cost = cost;
    if (k < n) before += ops[size_t(k)];
  }
  return best;
}

}  // namespace sy::model
