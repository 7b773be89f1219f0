#include "moe/low_precision_experts.h"

#include <omp.h>

#include <algorithm>

#include "ops/gemm_w8a8.h"
#include "ops/quantize_q4_0.h"
#include "ops/repack.h"
#include "util/error.h"
#include "util/ggml_types.h"
#include "util/nvfp4.h"
#include "util/quant_blocks.h"

namespace sy::moe {

namespace {

// Q4_0 / I8_ROW rows repacked into `packed` (aligned to 64 bytes inside it) for the int8
// kernels, which run the 16-row interleaved layout about twice as fast (Q4_0:
// bench/results/quantized.md; W8A8: bench_kernels --sections matmul); the groups are split
// over `threads`.
const void* pack_rows(const ops::WeightView& w, int threads, std::vector<uint8_t>& packed) {
  if (!ops::repack_enabled()) return nullptr;
  packed.resize(ops::packed_bytes(w) + 63);
  auto* base = reinterpret_cast<uint8_t*>((reinterpret_cast<uintptr_t>(packed.data()) + 63) &
                                          ~uintptr_t(63));
  const int64_t groups = (w.rows + ops::kPackRows - 1) / ops::kPackRows;
  const size_t group_bytes = ops::packed_group_bytes(w.dtype, w.cols);
#pragma omp parallel for num_threads(std::max(1, threads)) schedule(static)
  for (int64_t g = 0; g < groups; ++g) {
    const int64_t first = g * ops::kPackRows;
    ops::pack_rows(w.slice_rows(first, std::min(ops::kPackRows, w.rows - first)),
                   base + size_t(g) * group_bytes);
  }
  return base;
}

// `src` in `format` into `bytes` (and `packed`, for int8 and q4); returns the view.
ops::WeightView convert_matrix(const ops::WeightView& src, LowFormat format, int threads,
                               std::vector<uint8_t>& bytes, std::vector<uint8_t>& packed) {
  switch (format) {
    case LowFormat::kInt8: {
      bytes.resize(size_t(src.rows) * dtype_bytes(DType::I8_ROW, src.cols));
      ops::quantize_rows_i8(src, bytes.data(), threads);
      ops::WeightView i8{DType::I8_ROW, src.rows, src.cols, bytes.data()};
      i8.packed = pack_rows(i8, threads, packed);
      return i8;
    }
    case LowFormat::kQ4: {
      bytes.resize(size_t(src.rows) * dtype_bytes(DType::Q4_0, src.cols));
      ops::quantize_rows_q4_0(src, bytes.data(), threads);
      ops::WeightView q4{DType::Q4_0, src.rows, src.cols, bytes.data()};
      q4.packed = pack_rows(q4, threads, packed);
      return q4;
    }
    case LowFormat::kNvfp4: {
      const size_t row_bytes = dtype_bytes(DType::F32, src.cols);
      bytes.resize(size_t(src.rows) * row_bytes);
#pragma omp parallel num_threads(std::max(1, threads))
      {
        std::vector<float> x(size_t(src.cols));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < src.rows; ++r) {
          to_f32(src.dtype, src.row(r), x.data(), x.size());
          uint8_t* out = bytes.data() + size_t(r) * row_bytes;
          nvfp4_fake_quantize(x.data(), src.cols, reinterpret_cast<float*>(out));
        }
      }
      return {DType::F32, src.rows, src.cols, bytes.data()};
    }
  }
  SY_ASSERT_MSG(false, "unknown low-precision format");
  return {};
}

}  // namespace

void check_low_format(LowFormat format, const FfnWeights& w) {
  if (format != LowFormat::kQ4) return;
  for (const ops::WeightView* m : {&w.gate, &w.up, &w.down})
    if (m->cols % 32 != 0)
      fail(
          "--low-precision q4 stores rows in 32-value blocks, but this model's expert matrices "
          "have rows of {} values; use int8 or nvfp4",
          m->cols);
}

const FfnWeights& LowPrecisionExperts::convert(const FfnWeights& src, LowFormat format,
                                               int threads) {
  if (used_ == slots_.size()) slots_.emplace_back();
  Slot& s = slots_[used_++];
  s.view.gate = convert_matrix(src.gate, format, threads, s.gate, s.gate_packed);
  s.view.up = convert_matrix(src.up, format, threads, s.up, s.up_packed);
  s.view.down = convert_matrix(src.down, format, threads, s.down, s.down_packed);
  // NVFP4 is W4A4: the activations entering each product are rounded too (ffn_forward).
  s.view.nvfp4_activations = format == LowFormat::kNvfp4;
  s.view.gate_bias = src.gate_bias, s.view.up_bias = src.up_bias, s.view.down_bias = src.down_bias;
  s.view.clamp_limit = src.clamp_limit, s.view.glu_alpha = src.glu_alpha;
  return s.view;
}

size_t LowPrecisionExperts::bytes() const {
  size_t n = 0;
  for (size_t i = 0; i < used_; ++i) n += slots_[i].view.bytes();
  return n;
}

}  // namespace sy::moe
