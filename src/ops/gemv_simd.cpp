// Highway kernels for weight-streaming products: y = W x for a few activation rows at a time,
// with W in F32, F16, BF16 or ggml's Q8_0 / Q4_0 blocks widened to float32 in registers, and
// panel widening for sgemm (Q4_K / Q6_K decoded by util/quant_blocks.h: their fast path is
// gemv_int8.cpp).
// Compiled once per SIMD target (foreach_target) and chosen at run time (HWY_DYNAMIC_DISPATCH).
#include <algorithm>
#include <cstring>
#include <vector>

#include "ops/kernels.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/quant_blocks.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/gemv_simd.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// (foreach_target.h first: it re-includes this file once per SIMD target)

#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace sy::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;
using VF = hn::Vec<DF>;

// Weight element tags: the stored type, loaded as float32 lanes.
struct F32W {
  using T = float;
  static HWY_INLINE VF Load(DF df, const T* p) { return hn::LoadU(df, p); }
  static float Scalar(T v) { return v; }
};
struct BF16W {
  using T = uint16_t;
  static HWY_INLINE VF Load(DF df, const T* p) {
    // bf16 -> f32 is a zero-extend and a 16-bit shift; no rounding involved.
    const hn::Rebind<uint16_t, DF> du16;
    const hn::Rebind<uint32_t, DF> du32;
    return hn::BitCast(df, hn::ShiftLeft<16>(hn::PromoteTo(du32, hn::LoadU(du16, p))));
  }
  static float Scalar(T v) { return bf16_to_f32(v); }
};
struct F16W {
  using T = uint16_t;
  static HWY_INLINE VF Load(DF df, const T* p) {
    const hn::Rebind<hwy::float16_t, DF> dh;  // F16C vcvtph2ps on x86
    return hn::PromoteTo(df, hn::LoadU(dh, reinterpret_cast<const hwy::float16_t*>(p)));
  }
  static float Scalar(T v) { return f16_to_f32(v); }
};

// R weight rows times NX activation rows: R*NX accumulators live in registers, each weight
// vector is loaded once and FMAed against NX activation vectors. `pf` is a block of R rows
// further on: prefetching it (into L2; an L1 hint gained little) at the same column keeps DRAM
// busy across row starts, where the hardware prefetcher retrains on every new row. Measured
// on Zen 5, BF16 2816x1024, 1 thread: 10 GB/s without, 22 GB/s with.
// ACC: add the dot products to y (a later column chunk) instead of storing them.
template <class W, int R, int NX, bool ACC>
HWY_INLINE void DotBlock(const typename W::T* HWY_RESTRICT w, size_t ldw, const float* x,
                         size_t ldx, size_t cols, float* y, size_t ldy, const typename W::T* pf) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[R][NX];
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 16
    for (int j = 0; j < NX; ++j) acc[r][j] = hn::Zero(df);
  size_t c = 0;
  for (; c + N <= cols; c += N) {
    VF xv[NX];
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) __builtin_prefetch(pf + r * ldw + c, 0, 2);  // into L2
#pragma GCC unroll 16
    for (int j = 0; j < NX; ++j) xv[j] = hn::LoadU(df, x + j * ldx + c);
#pragma GCC unroll 16
    for (int r = 0; r < R; ++r) {
      const VF wv = W::Load(df, w + r * ldw + c);
#pragma GCC unroll 16
      for (int j = 0; j < NX; ++j) acc[r][j] = hn::MulAdd(wv, xv[j], acc[r][j]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < R; ++r) {
#pragma GCC unroll 16
    for (int j = 0; j < NX; ++j) {
      float s = hn::GetLane(hn::SumOfLanes(df, acc[r][j]));
      for (size_t t = c; t < cols; ++t) s += W::Scalar(w[r * ldw + t]) * x[j * ldx + t];
      y[j * ldy + r] = ACC ? y[j * ldy + r] + s : s;
    }
  }
}

// All n activation rows against one block of R weight rows; only the first chunk of 4
// activation rows streams W from memory (and prefetches the next block), later chunks
// find the block in L1/L2.
template <class W, int R, bool ACC>
HWY_INLINE void DotRows(const typename W::T* w, size_t ldw, const float* x, size_t ldx, size_t n,
                        size_t cols, float* y, size_t ldy, const typename W::T* pf) {
  size_t j = 0;
  for (; j + 4 <= n; j += 4, pf = w)
    DotBlock<W, R, 4, ACC>(w, ldw, x + j * ldx, ldx, cols, y + j * ldy, ldy, pf);
  switch (n - j) {
    case 3:
      DotBlock<W, R, 3, ACC>(w, ldw, x + j * ldx, ldx, cols, y + j * ldy, ldy, pf);
      break;
    case 2:
      DotBlock<W, R, 2, ACC>(w, ldw, x + j * ldx, ldx, cols, y + j * ldy, ldy, pf);
      break;
    case 1:
      DotBlock<W, R, 1, ACC>(w, ldw, x + j * ldx, ldx, cols, y + j * ldy, ldy, pf);
      break;
    default:
      break;
  }
}

// Blocks of R rows (R*NX <= 32 accumulators plus loads in 32 zmm registers), then single
// rows for the remainder.
// w points at column 0 of the block (rows are ldw elements apart); `cols` columns are used.
template <class W, int R, bool ACC = false>
void GemvBlocks(const typename W::T* w, size_t ldw, size_t cols, int64_t row_begin, int64_t row_end,
                const float* x, size_t ldx, size_t n, float* y, size_t ldy) {
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) {
    const auto* block = w + r * ldw;
    const auto* next = r + 3 * R <= row_end ? block + 2 * R * ldw : block;
    DotRows<W, R, ACC>(block, ldw, x, ldx, n, cols, y + r, ldy, next);
  }
  for (; r < row_end; ++r) {
    const auto* row = w + r * ldw;
    DotRows<W, 1, ACC>(row, ldw, x, ldx, n, cols, y + r, ldy, row);
  }
}

// Cache blocking for many activation rows. Every block of R weight rows is applied to all
// activation rows of a block; unblocked, a block of 4 weight rows x 2816 float32 columns
// (45 KiB) no longer stays in the 48 KiB L1 while X streams past it, and X itself
// (n x cols x 4 bytes) outgrows the 1 MiB L2 beyond ~128 rows x 2048 columns: both then come
// from the next level every time and the kernel runs at about half the FMA rate. Columns are
// cut into chunks of kColChunk (the weight block stays in L1; partial sums add into y) and
// activation rows into blocks of kRowBlock (X's chunk, 512 KiB, stays in L2). Weights are
// re-read once per row block, i.e. used kRowBlock times per read: far from the DRAM limit.
constexpr size_t kColChunk = 1024;
constexpr size_t kRowBlock = 128;

template <class W>
void GemvRowsT(const WeightView& wv, int64_t row_begin, int64_t row_end, const float* x, int64_t n,
               int64_t ldx, float* y, int64_t ldy) {
  const auto* w = static_cast<const typename W::T*>(wv.data);
  const size_t cols = size_t(wv.cols);
  // Decode (n = 1): 8 rows = 8 concurrent DRAM streams per thread; otherwise 4 rows x 4
  // activation rows = 16 accumulators.
  if (n == 1) {
    GemvBlocks<W, 8>(w, cols, cols, row_begin, row_end, x, size_t(ldx), 1, y, size_t(ldy));
    return;
  }
  if (n <= 4 || (cols <= kColChunk && size_t(n) <= kRowBlock)) {  // fits as it is
    GemvBlocks<W, 4>(w, cols, cols, row_begin, row_end, x, size_t(ldx), size_t(n), y, size_t(ldy));
    return;
  }
  // Chunks of about kColChunk columns, equal and a multiple of 16 floats (one cache line).
  const size_t num_chunks = (cols + kColChunk - 1) / kColChunk;
  const size_t chunk = std::min(cols, (cols / num_chunks + 15) / 16 * 16);
  for (size_t j = 0; j < size_t(n); j += kRowBlock) {
    const size_t nb = std::min(kRowBlock, size_t(n) - j);
    for (size_t c = 0; c < cols; c += chunk) {
      const size_t len = std::min(chunk, cols - c);
      const float* xc = x + j * size_t(ldx) + c;
      float* yj = y + j * size_t(ldy);
      if (c == 0)
        GemvBlocks<W, 4, false>(w, cols, len, row_begin, row_end, xc, size_t(ldx), nb, yj,
                                size_t(ldy));
      else
        GemvBlocks<W, 4, true>(w + c, cols, len, row_begin, row_end, xc, size_t(ldx), nb, yj,
                               size_t(ldy));
    }
  }
}

// --- ggml block formats (util/quant_blocks.h): rows of 32-value blocks, each with an f16 scale
// d. A block's dot product with x is accumulated unscaled in `part`, then folded into the
// row's total with one FMA by d: dot(x, row) = sum_b d_b sum_j q_bj x_bj. Int8 / int4 codes are
// widened to float lanes in registers; the weights stream from memory once.
// Block scales are f16: converted through a 256 KiB table (built once, stays in L2), as the
// portable conversion costs more than the block's 32 multiply-adds.
HWY_INLINE float BlockScale(const uint8_t* blk) {
  static const std::vector<float> table = [] {
    std::vector<float> t(65536);
    for (uint32_t h = 0; h < 65536; ++h) t[h] = f16_to_f32(uint16_t(h));
    return t;
  }();
  uint16_t h;
  std::memcpy(&h, blk, 2);
  return table[h];
}

struct Q8Block {  // {f16 d, i8 q[32]}
  static constexpr size_t kBytes = 34;
  static HWY_INLINE void Widen(DF df, const uint8_t* blk, float* dst) {
    const hn::Rebind<int8_t, DF> di8;
    const hn::Rebind<int32_t, DF> di32;
    const VF d = hn::Set(df, BlockScale(blk));
    const auto* q = reinterpret_cast<const int8_t*>(blk + 2);
    for (size_t k = 0; k < 32; k += hn::Lanes(df))
      hn::StoreU(hn::Mul(hn::ConvertTo(df, hn::PromoteTo(di32, hn::LoadU(di8, q + k))), d), df,
                 dst + k);
  }
  // Values k .. k + N of the block (k a multiple of the lane count N).
  static HWY_INLINE VF Values(DF df, const uint8_t* blk, size_t k) {
    const hn::Rebind<int8_t, DF> di8;
    const hn::Rebind<int32_t, DF> di32;
    return hn::ConvertTo(
        df, hn::PromoteTo(di32, hn::LoadU(di8, reinterpret_cast<const int8_t*>(blk + 2) + k)));
  }
};
// {f16 d, u8 q[16]}: value j < 16 is (q[j] & 15) - 8, value 16 + j is (q[j] >> 4) - 8.
struct Q4Block {
  static constexpr size_t kBytes = 18;
  static HWY_INLINE void Widen(DF df, const uint8_t* blk, float* dst) {
    const hn::Rebind<uint8_t, DF> du8;
    const hn::Rebind<int32_t, DF> di32;
    const VF d = hn::Set(df, BlockScale(blk));
    const auto eight = hn::Set(di32, 8), low_mask = hn::Set(di32, 15);
    for (size_t k = 0; k < 16; k += hn::Lanes(df)) {
      const auto bytes =
          hn::BitCast(di32, hn::PromoteTo(hn::Rebind<uint32_t, DF>(), hn::LoadU(du8, blk + 2 + k)));
      hn::StoreU(hn::Mul(hn::ConvertTo(df, hn::Sub(hn::And(bytes, low_mask), eight)), d), df,
                 dst + k);
      hn::StoreU(hn::Mul(hn::ConvertTo(df, hn::Sub(hn::ShiftRight<4>(bytes), eight)), d), df,
                 dst + 16 + k);
    }
  }
  static HWY_INLINE VF Values(DF df, const uint8_t* blk, size_t k) {
    const hn::Rebind<uint8_t, DF> du8;
    const hn::Rebind<int32_t, DF> di32;
    const auto bytes = hn::BitCast(
        di32, hn::PromoteTo(hn::Rebind<uint32_t, DF>(), hn::LoadU(du8, blk + 2 + (k & 15))));
    const auto nibbles = k < 16 ? hn::And(bytes, hn::Set(di32, 15)) : hn::ShiftRight<4>(bytes);
    return hn::ConvertTo(df, hn::Sub(nibbles, hn::Set(di32, 8)));
  }
};

// R block rows times NX activation rows.
template <class Q, int R, int NX>
HWY_INLINE void DotBlockQ(const uint8_t* HWY_RESTRICT w, size_t row_bytes, size_t blocks,
                          const float* x, size_t ldx, float* y, size_t ldy) {
  const DF df;
  const size_t N = hn::Lanes(df);
  VF acc[R][NX], part[R][NX];
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) acc[r][j] = hn::Zero(df);
  for (size_t b = 0; b < blocks; ++b) {
    const uint8_t* blk = w + b * Q::kBytes;
    if (b % 2 == 0)  // a cache line holds about two blocks
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) __builtin_prefetch(blk + r * row_bytes + 16 * Q::kBytes, 0, 2);
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
      for (int j = 0; j < NX; ++j) part[r][j] = hn::Zero(df);
    for (size_t k = 0; k < 32; k += N) {
      VF xv[NX];
#pragma GCC unroll 4
      for (int j = 0; j < NX; ++j) xv[j] = hn::LoadU(df, x + j * ldx + b * 32 + k);
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const VF wv = Q::Values(df, blk + r * row_bytes, k);
#pragma GCC unroll 4
        for (int j = 0; j < NX; ++j) part[r][j] = hn::MulAdd(wv, xv[j], part[r][j]);
      }
    }
#pragma GCC unroll 8
    for (int r = 0; r < R; ++r) {
      const VF d = hn::Set(df, BlockScale(blk + r * row_bytes));
#pragma GCC unroll 4
      for (int j = 0; j < NX; ++j) acc[r][j] = hn::MulAdd(part[r][j], d, acc[r][j]);
    }
  }
#pragma GCC unroll 8
  for (int r = 0; r < R; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NX; ++j) y[j * ldy + r] = hn::GetLane(hn::SumOfLanes(df, acc[r][j]));
}

template <class Q, int R>
HWY_INLINE void DotRowsQ(const uint8_t* w, size_t row_bytes, size_t blocks, const float* x,
                         size_t ldx, size_t n, float* y, size_t ldy) {
  size_t j = 0;
  for (; j + 4 <= n; j += 4)
    DotBlockQ<Q, R, 4>(w, row_bytes, blocks, x + j * ldx, ldx, y + j * ldy, ldy);
  switch (n - j) {
    case 3:
      DotBlockQ<Q, R, 3>(w, row_bytes, blocks, x + j * ldx, ldx, y + j * ldy, ldy);
      break;
    case 2:
      DotBlockQ<Q, R, 2>(w, row_bytes, blocks, x + j * ldx, ldx, y + j * ldy, ldy);
      break;
    case 1:
      DotBlockQ<Q, R, 1>(w, row_bytes, blocks, x + j * ldx, ldx, y + j * ldy, ldy);
      break;
    default:
      break;
  }
}

template <class Q>
void GemvRowsQ(const WeightView& wv, int64_t row_begin, int64_t row_end, const float* x, int64_t n,
               int64_t ldx, float* y, int64_t ldy) {
  const auto* w = static_cast<const uint8_t*>(wv.data);
  const size_t row_bytes = wv.row_bytes(), blocks = size_t(wv.cols) / 32;
  // Decode: 4 rows = 4 concurrent streams with 8 accumulators; more activation rows: 2 rows.
  constexpr int R1 = 4, RN = 2;
  const int R = n == 1 ? R1 : RN;
  int64_t r = row_begin;
  for (; r + R <= row_end; r += R) {
    const uint8_t* block = w + size_t(r) * row_bytes;
    if (n == 1)
      DotRowsQ<Q, R1>(block, row_bytes, blocks, x, size_t(ldx), 1, y + r, size_t(ldy));
    else
      DotRowsQ<Q, RN>(block, row_bytes, blocks, x, size_t(ldx), size_t(n), y + r, size_t(ldy));
  }
  for (; r < row_end; ++r)
    DotRowsQ<Q, 1>(w + size_t(r) * row_bytes, row_bytes, blocks, x, size_t(ldx), size_t(n), y + r,
                   size_t(ldy));
}

// Q4_K / Q6_K / MXFP4 where the int8 kernels are unavailable (no AVX-512 VNNI, or SY_INT8_DOT=0):
// each row is decoded to float once (util/quant_blocks.h) and dotted with every activation row.
// Correct rather than fast.
void GemvRowsDecoded(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x,
                     int64_t n, int64_t ldx, float* y, int64_t ldy) {
  const size_t cols = size_t(w.cols);
  thread_local std::vector<float> row;
  if (row.size() < cols) row.resize(cols);
  for (int64_t r = row_begin; r < row_end; ++r) {
    dequantize_row(ggml_block_type(w.dtype), w.row(r), row.data(), w.cols);
    for (int64_t j = 0; j < n; ++j)
      DotBlock<F32W, 1, 1, false>(row.data(), cols, x + j * ldx, size_t(ldx), cols, y + j * ldy + r,
                                  size_t(ldy), row.data());
  }
}

void GemvRows(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x, int64_t n,
              int64_t ldx, float* y, int64_t ldy) {
  switch (w.dtype) {
    case DType::Q4_K:
    case DType::Q6_K:
    case DType::MXFP4:
      return GemvRowsDecoded(w, row_begin, row_end, x, n, ldx, y, ldy);
    case DType::F32:
      return GemvRowsT<F32W>(w, row_begin, row_end, x, n, ldx, y, ldy);
    case DType::BF16:
      return GemvRowsT<BF16W>(w, row_begin, row_end, x, n, ldx, y, ldy);
    case DType::F16:
      return GemvRowsT<F16W>(w, row_begin, row_end, x, n, ldx, y, ldy);
    case DType::Q8_0:
      return GemvRowsQ<Q8Block>(w, row_begin, row_end, x, n, ldx, y, ldy);
    case DType::Q4_0:
      return GemvRowsQ<Q4Block>(w, row_begin, row_end, x, n, ldx, y, ldy);
    case DType::I8_ROW:  // matmul sends it to gemm_w8a8.h
      SY_ASSERT_MSG(false, "gemv_rows: I8_ROW runs in matmul_w8a8");
  }
}

// Whole blocks (rows of block types hold whole blocks): q * d, as the reference decodes them.
template <class Q>
void WidenQ(const uint8_t* HWY_RESTRICT src, size_t count, float* HWY_RESTRICT dst) {
  const DF df;
  for (size_t b = 0; b < count / 32; ++b) Q::Widen(df, src + b * Q::kBytes, dst + b * 32);
}

template <class W>
void WidenT(const typename W::T* HWY_RESTRICT src, size_t count, float* HWY_RESTRICT dst) {
  const DF df;
  const size_t N = hn::Lanes(df);
  size_t i = 0;
  for (; i + N <= count; i += N) hn::StoreU(W::Load(df, src + i), df, dst + i);
  for (; i < count; ++i) dst[i] = W::Scalar(src[i]);
}

void WidenRows(const WeightView& w, int64_t row_begin, int64_t row_end, float* dst) {
  const size_t count = size_t(row_end - row_begin) * size_t(w.cols);
  switch (w.dtype) {
    case DType::F32:
      std::memcpy(dst, w.row(row_begin), count * 4);
      return;
    case DType::BF16:
      return WidenT<BF16W>(static_cast<const uint16_t*>(w.row(row_begin)), count, dst);
    case DType::F16:
      return WidenT<F16W>(static_cast<const uint16_t*>(w.row(row_begin)), count, dst);
    case DType::Q8_0:
      return WidenQ<Q8Block>(static_cast<const uint8_t*>(w.row(row_begin)), count, dst);
    case DType::Q4_0:
      return WidenQ<Q4Block>(static_cast<const uint8_t*>(w.row(row_begin)), count, dst);
    case DType::Q4_K:
    case DType::Q6_K:
    case DType::MXFP4:
      return dequantize_row(ggml_block_type(w.dtype), w.row(row_begin), dst, int64_t(count));
    case DType::I8_ROW:
      for (int64_t r = row_begin; r < row_end; ++r)
        to_f32(DType::I8_ROW, w.row(r), dst + (r - row_begin) * w.cols, size_t(w.cols));
      return;
  }
}

}  // namespace sy::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sy::ops::detail {
HWY_EXPORT(GemvRows);
HWY_EXPORT(WidenRows);

void gemv_rows(const WeightView& w, int64_t row_begin, int64_t row_end, const float* x, int64_t n,
               int64_t ldx, float* y, int64_t ldy) {
  HWY_DYNAMIC_DISPATCH(GemvRows)(w, row_begin, row_end, x, n, ldx, y, ldy);
}

void widen_rows(const WeightView& w, int64_t row_begin, int64_t row_end, float* dst) {
  HWY_DYNAMIC_DISPATCH(WidenRows)(w, row_begin, row_end, dst);
}
}  // namespace sy::ops::detail
#endif
