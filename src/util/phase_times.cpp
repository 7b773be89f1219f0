#include "util/phase_times.h"

#include <fmt/core.h>

namespace sy {

void PhaseTimes::add(const char* phase, double seconds) {
  for (auto& [name, total] : phases_)
    if (name == phase) {
      total += seconds;
      return;
    }
  phases_.emplace_back(phase, seconds);
}

std::string PhaseTimes::table(int steps) const {
  double sum = 0;
  for (const auto& p : phases_) sum += p.second;
  std::string out = fmt::format("  {:<28} {:>12} {:>7}\n", "phase", "ms / step", "share");
  for (const auto& [name, total] : phases_)
    out += fmt::format("  {:<28} {:>12.2f} {:>6.1f}%\n", name, 1e3 * total / steps,
                       sum > 0 ? 100 * total / sum : 0.0);
  return out;
}

}  // namespace sy
