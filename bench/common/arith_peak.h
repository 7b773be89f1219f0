// The arithmetic ceiling of this CPU, measured: a loop of independent multiply-adds on
// registers only (no memory traffic), per thread count. 16 accumulator chains cover the
// instructions' latency times their throughput on current x86 cores. The float32 figure is
// 512-bit FMAs (AVX-512; 256-bit where the CPU has only AVX2); the BF16 figure is vdpbf16ps
// (AVX512_BF16: 32 BF16 multiply-adds per instruction), 0 where the CPU lacks it.
#pragma once

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>
#include <omp.h>

#include <cstdint>

#include "timing.h"

namespace sy::bench {

struct ArithPeak {
  double f32_gflops = 0;   // FMA
  double bf16_gflops = 0;  // vdpbf16ps; 0 when the CPU lacks AVX512_BF16
};

namespace detail {

constexpr int kPeakChains = 16;
constexpr int64_t kPeakIters = 1 << 20;

// Returns a value that depends on every chain, so the loop cannot be dropped.
__attribute__((target("avx512f"))) inline float fma512_loop(float seed) {
  __m512 acc[kPeakChains];
  for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm512_set1_ps(seed + float(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 16  // the accumulators must stay in registers
    for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kPeakChains; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

__attribute__((target("avx2,fma"))) inline float fma256_loop(float seed) {
  __m256 acc[kPeakChains];
  for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm256_set1_ps(seed + float(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 16  // the accumulators must stay in registers
    for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  __m256 s = acc[0];
  for (int i = 1; i < kPeakChains; ++i) s = _mm256_add_ps(s, acc[i]);
  float out[8];
  _mm256_storeu_ps(out, s);
  return out[0] + out[7];
}

__attribute__((target("avx512f,avx512bf16"))) inline float dpbf16_loop(float seed) {
  __m512 acc[kPeakChains];
  for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm512_set1_ps(seed + float(i));
  const __m512bh a = (__m512bh)_mm512_set1_epi32(0x3f803f80);  // the pair (1, 1)
  const __m512bh b = (__m512bh)_mm512_set1_epi32(0x33d633d6);  // about 1e-7 each
  for (int64_t it = 0; it < kPeakIters; ++it)
#pragma GCC unroll 16  // the accumulators must stay in registers
    for (int i = 0; i < kPeakChains; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  __m512 s = acc[0];
  for (int i = 1; i < kPeakChains; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}

}  // namespace detail

// Median of `reps` timings of every thread running the loops at once.
inline ArithPeak measure_arith_peak(int threads, int reps = 5) {
  __builtin_cpu_init();
  const bool avx512 = __builtin_cpu_supports("avx512f");
  const bool bf16 = avx512 && __builtin_cpu_supports("avx512bf16");
  float sink = 0;
  auto run = [&](auto loop) {
    return time_median(
               [&] {
#pragma omp parallel num_threads(threads)
                 {
                   const float v = loop(float(omp_get_thread_num()));
#pragma omp atomic
                   sink += v;
                 }
               },
               1, reps)
        .median_s;
  };
  const double ops = double(threads) * double(detail::kPeakIters) * detail::kPeakChains;
  ArithPeak p;
  const auto keep = [](float v) { asm volatile("" : : "x"(v)); };  // the sums stay live
  if (avx512) {
    p.f32_gflops = ops * 32 / run(detail::fma512_loop) * 1e-9;
  } else {
    p.f32_gflops = ops * 16 / run(detail::fma256_loop) * 1e-9;
  }
  if (bf16) p.bf16_gflops = ops * 64 / run(detail::dpbf16_loop) * 1e-9;
  keep(sink);
  return p;
}

}  // namespace sy::bench
