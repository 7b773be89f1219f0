#include "ops/interleave16.h"

#include "ops/vnni_target.h"  // first: <immintrin.h> without GCC 12's false warnings

#include <algorithm>

namespace sy::ops::detail {

namespace {

#define SY_AVX512BW __attribute__((target("avx512f,avx512bw")))

SY_AVX512BW inline void StorePiece(uint8_t* out, int p, int64_t count, __m512i v) {
  if (p < count) _mm512_storeu_si512(out + p * 64, v);
}

}  // namespace

// Per 64 bytes of the 16 rows: unpack 32-bit then 64-bit pairs, then two rounds of 128-bit lane
// shuffles. Fully unrolled (the pragmas) so that the 16 rows stay in registers.
SY_AVX512BW void interleave16(const uint8_t* const rows[16], int valid, int64_t row_bytes,
                              uint8_t* dst) {
  const int64_t pieces = (row_bytes + 3) / 4;
  for (int64_t p0 = 0; p0 < pieces; p0 += 16) {
    const int64_t left = row_bytes - 4 * p0;
    const __mmask64 m = left >= 64 ? ~__mmask64(0) : (__mmask64(1) << left) - 1;
    __m512i in[16], a[16], b[16];
#pragma GCC unroll 16
    for (int r = 0; r < 16; ++r)
      in[r] = r < valid ? _mm512_maskz_loadu_epi8(m, rows[r] + 4 * p0) : _mm512_setzero_si512();
#pragma GCC unroll 8
    for (int i = 0; i < 8; ++i) {
      a[2 * i] = _mm512_unpacklo_epi32(in[2 * i], in[2 * i + 1]);
      a[2 * i + 1] = _mm512_unpackhi_epi32(in[2 * i], in[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; ++i) {  // b[4i + c], 128-bit lane L: rows 4i .. 4i + 3 of piece 4L + c
      b[4 * i + 0] = _mm512_unpacklo_epi64(a[4 * i], a[4 * i + 2]);
      b[4 * i + 1] = _mm512_unpackhi_epi64(a[4 * i], a[4 * i + 2]);
      b[4 * i + 2] = _mm512_unpacklo_epi64(a[4 * i + 1], a[4 * i + 3]);
      b[4 * i + 3] = _mm512_unpackhi_epi64(a[4 * i + 1], a[4 * i + 3]);
    }
    const int64_t count = std::min<int64_t>(16, pieces - p0);
    uint8_t* out = dst + p0 * 64;
#pragma GCC unroll 4
    for (int c = 0; c < 4; ++c) {
      const __m512i x0 = _mm512_shuffle_i32x4(b[c], b[4 + c], _MM_SHUFFLE(2, 0, 2, 0));
      const __m512i x1 = _mm512_shuffle_i32x4(b[c], b[4 + c], _MM_SHUFFLE(3, 1, 3, 1));
      const __m512i y0 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(2, 0, 2, 0));
      const __m512i y1 = _mm512_shuffle_i32x4(b[8 + c], b[12 + c], _MM_SHUFFLE(3, 1, 3, 1));
      StorePiece(out, c, count, _mm512_shuffle_i32x4(x0, y0, _MM_SHUFFLE(2, 0, 2, 0)));
      StorePiece(out, 4 + c, count, _mm512_shuffle_i32x4(x1, y1, _MM_SHUFFLE(2, 0, 2, 0)));
      StorePiece(out, 8 + c, count, _mm512_shuffle_i32x4(x0, y0, _MM_SHUFFLE(3, 1, 3, 1)));
      StorePiece(out, 12 + c, count, _mm512_shuffle_i32x4(x1, y1, _MM_SHUFFLE(3, 1, 3, 1)));
    }
  }
}

}  // namespace sy::ops::detail
