// Timing helper for benchmarks: warm-up runs, then the median (and spread) of repetitions.
#pragma once

#include <algorithm>
#include <chrono>
#include <vector>

namespace sy::bench {

struct Timing {
  double median_s = 0, min_s = 0, max_s = 0;
  int reps = 0;
};

// Runs f() `warmup` times untimed, then `reps` timed times.
template <class F>
Timing time_median(F&& f, int warmup, int reps) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < reps; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    t.push_back(std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  return Timing{t[t.size() / 2], t.front(), t.back(), reps};
}

}  // namespace sy::bench
