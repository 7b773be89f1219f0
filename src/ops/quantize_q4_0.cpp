#include "ops/vnni_target.h"  // first: <immintrin.h> without GCC 12's false warnings
// (then the rest)
#include "ops/quantize_q4_0.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "ops/kernels.h"
#include "util/error.h"
#include "util/ggml_types.h"
#include "util/quant_blocks.h"

namespace sy::ops {

namespace {

#define SY_AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))

bool cpu_has_avx512bw() {
  static const bool has = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return has;
}

void put_half(uint8_t* p, float v) {
  const uint16_t h = f32_to_f16(v);
  std::memcpy(p, &h, 2);
}

// One 32-value block as ggml's quantize_row_q4_0_ref: d = (the value of largest magnitude,
// the first such, with its sign) / -8, codes min(15, trunc(x / d + 8.5)). The multiply and the
// add stay separate roundings (this file is built with -ffp-contract=off), as in the reference.
SY_AVX512 void BlockAvx512(const float* x, uint8_t* b) {
  const __m512 lo = _mm512_loadu_ps(x), hi = _mm512_loadu_ps(x + 16);
  const __m512 alo = _mm512_abs_ps(lo), ahi = _mm512_abs_ps(hi);
  const float amax = _mm512_reduce_max_ps(_mm512_max_ps(alo, ahi));
  float max = 0;
  if (amax > 0) {  // the first value whose magnitude is amax
    const __m512 va = _mm512_set1_ps(amax);
    const __mmask16 mlo = _mm512_cmp_ps_mask(alo, va, _CMP_EQ_OQ);
    const __mmask16 mhi = _mm512_cmp_ps_mask(ahi, va, _CMP_EQ_OQ);
    max = mlo ? x[__builtin_ctz(mlo)] : x[16 + __builtin_ctz(mhi)];
  }
  const float d = max / -8.0f;
  const float id = d != 0 ? 1.0f / d : 0.0f;
  put_half(b, d);
  const __m512 vid = _mm512_set1_ps(id), half = _mm512_set1_ps(8.5f);
  const __m512i fifteen = _mm512_set1_epi32(15);
  const __m512i qlo =
      _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(lo, vid), half)), fifteen);
  const __m512i qhi =
      _mm512_min_epi32(_mm512_cvttps_epi32(_mm512_add_ps(_mm512_mul_ps(hi, vid), half)), fifteen);
  const __m512i packed = _mm512_or_si512(qlo, _mm512_slli_epi32(qhi, 4));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(b + 2), _mm512_cvtepi32_epi8(packed));
}

SY_AVX512 void RowAvx512(const float* x, int64_t n, uint8_t* dst) {
  for (int64_t i = 0; i < n; i += 32, dst += 18) BlockAvx512(x + i, dst);
}

}  // namespace

void quantize_row_q4_0(const float* x, int64_t n, uint8_t* dst) {
  SY_ASSERT(n % 32 == 0);
  if (cpu_has_avx512bw())
    RowAvx512(x, n, dst);
  else
    quantize_row(GgmlType::Q4_0, x, dst, n);
}

void quantize_rows_q4_0(const WeightView& src, uint8_t* dst, int threads) {
  SY_ASSERT(src.cols % 32 == 0);
  const size_t row_bytes = dtype_bytes(DType::Q4_0, src.cols);
#pragma omp parallel num_threads(std::max(1, threads))
  {
    std::vector<float> x(size_t(src.cols));
#pragma omp for schedule(static)
    for (int64_t r = 0; r < src.rows; ++r) {
      const float* xr = static_cast<const float*>(src.row(r));
      if (src.dtype != DType::F32) {
        detail::widen_rows(src, r, r + 1, x.data());  // the SIMD widening matmul uses
        xr = x.data();
      }
      quantize_row_q4_0(xr, src.cols, dst + size_t(r) * row_bytes);
    }
  }
}

}  // namespace sy::ops
