// SplitMix64 (Steele, Lea, Flood 2014), the project's one counter-based generator: value n of
// the stream seeded at s is mix64(s + (n + 1) * kSplitMixGolden), so any element can be drawn
// on its own (reproducible hashing of (seed, step, row), per-pair priorities, tensor fills).
#pragma once

#include <cstdint>

namespace sy {

inline constexpr uint64_t kSplitMixGolden = 0x9e3779b97f4a7c15ull;

// The output function: a bijection with full avalanche.
constexpr uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// One step from state x: the hash of x used wherever a single value is needed.
constexpr uint64_t splitmix64(uint64_t x) {
  return mix64(x + kSplitMixGolden);
}

// The sequential stream (benchmarks' data generators).
struct SplitMix64 {
  uint64_t state;
  explicit constexpr SplitMix64(uint64_t seed) : state(seed) {}
  constexpr uint64_t next() { return mix64(state += kSplitMixGolden); }
  // Uniform in (0, 1), never 0 or 1 (safe under log).
  double uniform_open() { return (double(next() >> 11) + 0.5) * 0x1.0p-53; }
};

}  // namespace sy
