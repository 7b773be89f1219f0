// Read-bandwidth probe (header-only): the machine's limit that bandwidth-bound kernels are
// reported against. Each OpenMP thread reads its share of a 512 MiB buffer as several
// independent streams (hardware prefetchers track each); the result is the median of passes.
#pragma once

#include <omp.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <vector>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace sy::bench {

namespace detail {

// 8 streams with a software prefetch into L2 2 KiB ahead: the strongest of 1-8 streams x
// {no, 0.5, 2, 8 KiB} prefetch on Zen 5 (1 thread: 4 streams 15 GB/s, 8 + prefetch 24 GB/s).
// A probe weaker than the kernels it judges would make their fractions meaningless.
constexpr int kStreams = 8;
constexpr size_t kPrefetchBytes = 2048;

// Sums `count` 64-byte lines from each of kStreams streams; the sum keeps the loads alive.
#if defined(__x86_64__)
__attribute__((target("avx2"))) inline uint64_t read_streams_avx2(const uint8_t* const* s,
                                                                  size_t lines) {
  __m256i acc[kStreams][2] = {};
  for (size_t i = 0; i < lines; ++i) {
    for (int k = 0; k < kStreams; ++k) {
      const auto* p = reinterpret_cast<const __m256i*>(s[k] + i * 64);
      __builtin_prefetch(s[k] + i * 64 + kPrefetchBytes, 0, 2);  // never faults past the end
      acc[k][0] = _mm256_add_epi64(acc[k][0], _mm256_load_si256(p));
      acc[k][1] = _mm256_add_epi64(acc[k][1], _mm256_load_si256(p + 1));
    }
  }
  __m256i t = _mm256_setzero_si256();
  for (int k = 0; k < kStreams; ++k)
    t = _mm256_add_epi64(t, _mm256_xor_si256(acc[k][0], acc[k][1]));
  alignas(32) uint64_t out[4];
  _mm256_store_si256(reinterpret_cast<__m256i*>(out), t);
  return out[0] + out[1] + out[2] + out[3];
}
#endif

inline uint64_t read_streams_scalar(const uint8_t* const* s, size_t lines) {
  uint64_t acc[kStreams] = {};
  for (size_t i = 0; i < lines; ++i)
    for (int k = 0; k < kStreams; ++k) {
      const auto* p = reinterpret_cast<const uint64_t*>(s[k] + i * 64);
      for (int q = 0; q < 8; ++q) acc[k] += p[q];
    }
  uint64_t sum = 0;
  for (int k = 0; k < kStreams; ++k) sum += acc[k];
  return sum;
}

inline uint64_t read_streams(const uint8_t* const* s, size_t lines) {
#if defined(__x86_64__)
  if (__builtin_cpu_supports("avx2")) return read_streams_avx2(s, lines);
#endif
  return read_streams_scalar(s, lines);
}

}  // namespace detail

struct BandwidthResult {
  double gbps_median = 0, gbps_min = 0, gbps_max = 0;
  int threads = 0;
  size_t bytes = 0;
};

// Read bandwidth with `threads` OpenMP threads over `bytes` (median of `passes` after one
// warm-up pass). The buffer is allocated once per process and first-touched in parallel.
inline BandwidthResult probe_read_bandwidth(int threads, size_t bytes = size_t(512) << 20,
                                            int passes = 7) {
  static uint8_t* buffer = nullptr;
  static size_t buffer_bytes = 0;
  if (buffer_bytes < bytes) {
    std::free(buffer);
    buffer = static_cast<uint8_t*>(std::aligned_alloc(4096, bytes));
    buffer_bytes = bytes;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < bytes; i += 4096) std::memset(buffer + i, int(i >> 12), 4096);
  }
  const size_t lines_per_thread = bytes / 64 / size_t(threads);
  const size_t lines_per_stream = lines_per_thread / detail::kStreams;
  volatile uint64_t sink = 0;
  std::vector<double> gbps;
  for (int p = 0; p < passes + 1; ++p) {
    const auto t0 = std::chrono::steady_clock::now();
    uint64_t total = 0;
#pragma omp parallel num_threads(threads) reduction(+ : total)
    {
      const uint8_t* base = buffer + size_t(omp_get_thread_num()) * lines_per_thread * 64;
      const uint8_t* streams[detail::kStreams];
      for (int k = 0; k < detail::kStreams; ++k) streams[k] = base + k * lines_per_stream * 64;
      total += detail::read_streams(streams, lines_per_stream);
    }
    const double s = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    sink = sink + total;
    if (p > 0)
      gbps.push_back(double(lines_per_stream * detail::kStreams * threads * 64) / s * 1e-9);
  }
  std::sort(gbps.begin(), gbps.end());
  BandwidthResult r;
  r.gbps_median = gbps[gbps.size() / 2];
  r.gbps_min = gbps.front();
  r.gbps_max = gbps.back();
  r.threads = threads;
  r.bytes = bytes;
  return r;
}

}  // namespace sy::bench
