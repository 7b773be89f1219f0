// Every kernel of src/ops against a plain scalar version written here (double accumulation).
// Tolerances come from float32 rounding: a K-term dot product accumulated in float32 errs by
// about eps * sqrt(K) * |w| * |x| (random-walk bound, Cauchy-Schwarz on sum |w_i x_i|), with a
// safety factor; elementwise kernels by a few eps relative to the result.
#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cblas.h>

#include <cmath>
#include <cstdlib>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "ops/blas_env.h"
#include "ops/elementwise.h"
#include "ops/gemm_bf16.h"
#include "ops/gemm_w8a8.h"
#include "ops/gemv_int8.h"
#include "ops/kernels.h"
#include "ops/matmul.h"
#include "ops/repack.h"
#include "ops/threads.h"
#include "ops/weight.h"
#include "random_data.h"
#include "util/dtype.h"
#include "util/quant_blocks.h"

namespace sy::ops {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();

using sy::testing::random_floats;

// A weight matrix stored in `dtype`, plus its exact float32 values (the widening is exact).
struct TestWeight {
  std::vector<uint8_t> bytes;
  std::vector<float> values;  // [rows, cols]
  WeightView view;
};

TestWeight make_weight(DType dtype, int64_t rows, int64_t cols, uint32_t seed) {
  TestWeight t;
  const auto src = random_floats(size_t(rows * cols), seed);
  if (is_block_type(dtype)) {  // ggml blocks: the values are what the reference decodes
    const GgmlType g = ggml_block_type(dtype);
    const size_t row = dtype_bytes(dtype, cols);
    t.bytes.resize(row * size_t(rows) + 1);
    t.values.resize(src.size());
    for (int64_t r = 0; r < rows; ++r) {
      quantize_row(g, src.data() + r * cols, t.bytes.data() + size_t(r) * row, cols);
      dequantize_row(g, t.bytes.data() + size_t(r) * row, t.values.data() + r * cols, cols);
    }
    t.view = WeightView{dtype, rows, cols, t.bytes.data()};
    return t;
  }
  t.bytes.resize(src.size() * dtype_size(dtype) + 1);
  t.values.resize(src.size());
  for (size_t i = 0; i < src.size(); ++i) {
    if (dtype == DType::F32) {
      std::memcpy(t.bytes.data() + 4 * i, &src[i], 4);
      t.values[i] = src[i];
    } else {
      const uint16_t h = dtype == DType::BF16 ? f32_to_bf16(src[i]) : f32_to_f16(src[i]);
      std::memcpy(t.bytes.data() + 2 * i, &h, 2);
      t.values[i] = dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  t.view = WeightView{dtype, rows, cols, t.bytes.data()};
  return t;
}

double norm2(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(v[i]) * v[i];
  return std::sqrt(s);
}

// Checks Y[n, rows] (row stride ldy) against the double-precision product; prints the worst.
// bf16_rounding: whether the activations went through BF16 rounding; the default: whenever
// matmul rounds them (BF16 weights on a CPU with AVX512_BF16, gemm_bf16.h).
void expect_matmul_close(const TestWeight& w, const float* x, int64_t n, int64_t ldx,
                         const float* y, int64_t ldy, const std::string& what,
                         int bf16_rounding = -1) {
  if (bf16_rounding < 0) bf16_rounding = w.view.dtype == DType::BF16 && detail::bf16_dot_enabled();
  const int64_t rows = w.view.rows, cols = w.view.cols;
  double worst_ratio = 0, worst_err = 0, worst_tol = 0, worst_ref = 0, worst_got = 0;
  int64_t worst_j = -1, worst_r = -1;
  for (int64_t j = 0; j < n; ++j) {
    const double xn = norm2(x + j * ldx, cols);
    for (int64_t r = 0; r < rows; ++r) {
      const float* wr = w.values.data() + r * cols;
      double ref = 0;
      for (int64_t c = 0; c < cols; ++c) ref += double(wr[c]) * x[j * ldx + c];
      double tol = 4.0 * kEps * std::sqrt(double(cols)) * norm2(wr, cols) * xn + 1e-30;
      // The int8 kernels quantize each activation block (32 values; 256 for Q4_K / Q6_K) to
      // d = max|x| / 127, kept as f16 for blocks of 32 (as ggml's block_q8_0): every activation
      // moves by at most d / 2 (+ 127 d 2^-11 for the f16 scale).
      if (is_block_type(w.view.dtype) && detail::int8_dot_enabled()) {
        const int64_t span = dtype_block(w.view.dtype) == 256 ? 256 : 32;
        const double per_d = span == 32 ? 0.5 + 127.0 / 2048.0 : 0.5;
        for (int64_t b = 0; b < cols / span; ++b) {
          double amax = 0, wsum = 0;
          for (int64_t c = b * span; c < (b + 1) * span; ++c) {
            amax = std::max(amax, double(std::abs(x[j * ldx + c])));
            wsum += std::abs(double(wr[c]));
          }
          tol += 1.0001 * wsum * amax / 127.0 * per_d;
        }
      }
      // BF16 arithmetic (gemm_bf16.h) rounds each activation to BF16 first: 8 significant
      // bits, so it moves by at most 2^-8 of itself (half a unit in the last place).
      if (bf16_rounding) {
        double sum = 0;
        for (int64_t c = 0; c < cols; ++c) sum += std::abs(double(wr[c]) * x[j * ldx + c]);
        tol += 1.0001 * sum / 256.0;
      }
      const double err = std::abs(double(y[j * ldy + r]) - ref);
      if (!(err <= tol * worst_ratio) || worst_j < 0) {
        if (std::isnan(err) || err / tol > worst_ratio || worst_j < 0) {
          worst_ratio = std::isnan(err) ? INFINITY : err / tol;
          worst_err = err, worst_tol = tol, worst_ref = ref, worst_got = y[j * ldy + r];
          worst_j = j, worst_r = r;
        }
      }
    }
  }
  EXPECT_LE(worst_ratio, 1.0) << what << ": worst at x row " << worst_j << ", out " << worst_r
                              << ": got " << worst_got << " want " << worst_ref << " (err "
                              << worst_err << " > tol " << worst_tol << ")";
}

struct MatmulCase {
  DType dtype;
  int64_t rows, cols, n;
};

std::string case_name(const MatmulCase& c) {
  return std::string(dtype_name(c.dtype)) + " rows=" + std::to_string(c.rows) +
         " cols=" + std::to_string(c.cols) + " n=" + std::to_string(c.n);
}

std::vector<MatmulCase> matmul_cases() {
  std::vector<MatmulCase> cases;
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t rows : {1, 3, 4, 5, 17, 64})
      for (int64_t cols : {1, 7, 16, 33, 100, 1027})
        for (int64_t n : {1, 2, 3, 4, 5, 7, 8, 17, 130}) cases.push_back({dt, rows, cols, n});
  // ggml's block formats: rows of whole blocks (32 values; 256 for the K types).
  for (DType dt : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::MXFP4})
    for (int64_t rows : {1, 3, 4, 5, 17})
      for (int64_t cols : {32, 96, 256, 1024})
        for (int64_t n : {1, 2, 3, 4, 5, 8, 130})
          if (cols % dtype_block(dt) == 0) cases.push_back({dt, rows, cols, n});
  // Beyond kStreamMaxRows (512): the sgemm path through the public entry point.
  for (DType dt : {DType::F32, DType::BF16}) cases.push_back({dt, 19, 70, 600});
  // Big enough to be split across threads, with row counts that do not divide evenly.
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t n : {1, 2, 7, 16, 17, 130}) cases.push_back({dt, 301, 517, n});
  return cases;
}

class ThreadCounts : public ::testing::TestWithParam<int> {
 protected:
  void SetUp() override { set_num_threads(GetParam()); }
  void TearDown() override { set_num_threads(0); }
};

TEST_P(ThreadCounts, MatmulDenseMatchesScalar) {
  uint32_t seed = 1;
  for (const MatmulCase& c : matmul_cases()) {
    const TestWeight w = make_weight(c.dtype, c.rows, c.cols, seed++);
    const auto x = random_floats(size_t(c.n * c.cols), seed++);
    std::vector<float> y(size_t(c.n * c.rows), NAN);
    matmul(w.view, x.data(), c.n, y.data());
    expect_matmul_close(w, x.data(), c.n, c.cols, y.data(), c.rows, case_name(c));
  }
}

TEST_P(ThreadCounts, MatmulStridedLeavesPaddingAlone) {
  uint32_t seed = 1000;
  for (const MatmulCase& c : matmul_cases()) {
    if (c.cols > 200 && c.rows < 300) continue;  // the dense test covers these
    const int64_t ldx = c.cols + 5, ldy = c.rows + 3;
    const TestWeight w = make_weight(c.dtype, c.rows, c.cols, seed++);
    const auto x = random_floats(size_t(c.n * ldx), seed++);
    std::vector<float> y(size_t(c.n * ldy), 12345.0f);
    matmul(w.view, x.data(), c.n, y.data(), ldx, ldy);
    expect_matmul_close(w, x.data(), c.n, ldx, y.data(), ldy, "strided " + case_name(c));
    for (int64_t j = 0; j < c.n; ++j)
      for (int64_t r = c.rows; r < ldy; ++r)
        ASSERT_EQ(y[j * ldy + r], 12345.0f) << "padding written: " << case_name(c);
  }
}

TEST_P(ThreadCounts, GemvIsMatmulOfOneRow) {
  for (DType dt : {DType::F32, DType::F16, DType::BF16}) {
    const TestWeight w = make_weight(dt, 259, 1030, 7);
    const auto x = random_floats(1030, 8);
    std::vector<float> y(259);
    gemv(w.view, x.data(), y.data());
    expect_matmul_close(w, x.data(), 1, 1030, y.data(), 259, "gemv");
  }
}

// matmul picks one path by n; both paths must be right on every shape.
TEST_P(ThreadCounts, BothPathsMatchScalar) {
  uint32_t seed = 5000;
  for (DType dt : {DType::F32, DType::F16, DType::BF16})
    for (int64_t rows : {1, 3, 17, 301})
      for (int64_t cols : {1, 33, 517})
        for (int64_t n : {1, 3, 7, 130}) {
          const MatmulCase c{dt, rows, cols, n};
          const int64_t ldx = cols + 2, ldy = rows + 1;
          const TestWeight w = make_weight(dt, rows, cols, seed++);
          const auto x = random_floats(size_t(n * ldx), seed++);
          std::vector<float> y(size_t(n * ldy), NAN);
          detail::matmul_sgemm(w.view, x.data(), n, ldx, y.data(), ldy, GetParam());
          expect_matmul_close(w, x.data(), n, ldx, y.data(), ldy, "sgemm path " + case_name(c), 0);
          std::fill(y.begin(), y.end(), NAN);
          detail::matmul_stream(w.view, x.data(), n, ldx, y.data(), ldy, GetParam());
          expect_matmul_close(w, x.data(), n, ldx, y.data(), ldy, "stream path " + case_name(c), 0);
        }
}

// The BF16 kernel itself, on every tile shape and edge (rows not a multiple of 16 or 32, odd
// cols, activation rows not a multiple of 12, strides), against double sums of the weights
// times the activations rounded to BF16 as this test rounds them (nearest, ties to even): only
// float32 accumulation error is left, so a packing or transposition slip fails it.
TEST_P(ThreadCounts, Bf16PathMatchesRoundedReference) {
  if (!detail::bf16_dot_enabled()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  uint32_t seed = 6000;
  for (int64_t rows : {1, 3, 16, 17, 31, 33, 64, 301})
    for (int64_t cols : {1, 2, 7, 32, 33, 100, 1027})
      for (int64_t n : {1, 5, 12, 13, 25, 130}) {
        const MatmulCase c{DType::BF16, rows, cols, n};
        const int64_t ldx = cols + 3, ldy = rows + 2;
        const TestWeight w = make_weight(DType::BF16, rows, cols, seed++);
        const auto x = random_floats(size_t(n * ldx), seed++);
        std::vector<float> rounded(x.size());
        for (size_t i = 0; i < x.size(); ++i) rounded[i] = bf16_to_f32(f32_to_bf16(x[i]));
        const PackedWeight packed(w.view);
        for (bool use_packed : {false, true}) {
          WeightView v = w.view;
          if (use_packed) v.packed = packed.data();
          const std::string what = std::string(use_packed ? "repacked " : "") + case_name(c);
          std::vector<float> y(size_t(n * ldy), 12345.0f);
          detail::matmul_bf16(v, x.data(), n, ldx, y.data(), ldy, GetParam());
          expect_matmul_close(w, rounded.data(), n, ldx, y.data(), ldy, "bf16 path " + what,
                              /*bf16_rounding=*/0);
          for (int64_t j = 0; j < n; ++j)
            for (int64_t r = rows; r < ldy; ++r)
              ASSERT_EQ(y[j * ldy + r], 12345.0f) << "padding written: " << what;
        }
      }
}

// The BF16 path sums each output in one order whatever the batch, the thread count, the tile
// or the repacked copy: a token's outputs are bit for bit those it gets alone. (What makes
// expert parallelism and batched scoring equal one process on BF16 models.) Also a slice of
// a repacked view (a fused gate_up's halves) reads its own rows.
TEST(Bf16Path, ATokensOutputsDoNotDependOnItsBatch) {
  if (!detail::bf16_dot_enabled()) GTEST_SKIP() << "no AVX512_BF16 on this CPU";
  const int64_t rows = 300, cols = 517, n = 37;
  const TestWeight w = make_weight(DType::BF16, rows, cols, 99);
  const auto x = random_floats(size_t(n * cols), 100);
  const PackedWeight packed(w.view);
  WeightView repacked = w.view;
  repacked.packed = packed.data();
  std::vector<float> alone(static_cast<size_t>(rows));
  for (int threads : {1, 2})
    for (const WeightView& v : {w.view, repacked}) {
      std::vector<float> batch(size_t(n * rows));
      detail::matmul_bf16(v, x.data(), n, cols, batch.data(), rows, threads);
      for (int64_t j = 0; j < n; j += 6) {
        detail::matmul_bf16(w.view, x.data() + j * cols, 1, cols, alone.data(), rows, 1);
        for (int64_t r = 0; r < rows; ++r)
          ASSERT_EQ(batch[size_t(j * rows + r)], alone[size_t(r)])
              << "row " << j << " out " << r << ", " << threads << " threads"
              << (v.packed ? ", repacked" : "");
      }
    }
  const WeightView top = repacked.slice_rows(0, 160), bottom = repacked.slice_rows(160, 140);
  ASSERT_NE(bottom.packed, nullptr);
  std::vector<float> full(static_cast<size_t>(rows)), part(static_cast<size_t>(rows));
  detail::matmul_bf16(w.view, x.data(), 1, cols, full.data(), rows, 1);
  detail::matmul_bf16(top, x.data(), 1, cols, part.data(), rows, 1);
  detail::matmul_bf16(bottom, x.data(), 1, cols, part.data() + 160, rows, 1);
  EXPECT_EQ(part, full);
}

// Activations quantized as llama.cpp quantizes them for each weight type, written here from
// ggml's definitions: block_q8_0 for Q8_0 / Q4_0 / MXFP4 weights (32 values, d = max|x| / 127 kept
// as f16, q = x * (127 / max|x|) rounded to nearest even: ggml's x86 quantize_row_q8_0, which
// llama.cpp runs on these CPUs, not its scalar reference's roundf(x / d)); block_q8_K for Q4_K /
// Q6_K (256 values, float d from the signed largest value, q = nearest-even(-127 x / max)). Returns
// the dequantized activations d q.
std::vector<double> quantized_activation(DType wtype, const float* x, int64_t cols) {
  std::vector<double> out(static_cast<size_t>(cols));
  const bool k_quant = wtype == DType::Q4_K || wtype == DType::Q6_K;
  const int64_t span = k_quant ? 256 : 32;
  for (int64_t b = 0; b < cols; b += span) {
    float amax = 0, max = 0;
    for (int64_t k = b; k < b + span; ++k)
      if (std::abs(x[k]) > amax) amax = std::abs(x[k]), max = x[k];
    for (int64_t k = b; k < b + span; ++k) {
      if (k_quant) {
        const float iscale = amax != 0 ? -127.0f / max : 0.0f;
        const int q = std::min(127, int(std::nearbyint(iscale * x[k])));
        out[size_t(k)] = iscale != 0 ? double(1.0f / iscale) * q : 0.0;
      } else {
        const float d = amax / 127.0f, id = amax != 0 ? 127.0f / amax : 0.0f;
        out[size_t(k)] = double(f16_to_f32(f32_to_f16(d))) * std::nearbyint(double(x[k] * id));
      }
    }
  }
  return out;
}

// The int8 kernels against the reference decoder's weights (util/quant_blocks.h, checked bit
// for bit elsewhere) times the activations quantized above, summed in double. Tolerance: float
// rounding of the per-lane partial sums, bounded through twice the largest weight magnitude of
// each 32-value sub-block (Q4_K's d sc q and dmin m terms can each reach it).
TEST_P(ThreadCounts, Int8PathMatchesReference) {
  if (!detail::int8_dot_enabled()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  uint32_t seed = 7000;
  for (DType dt : {DType::Q8_0, DType::Q4_0, DType::Q4_K, DType::Q6_K, DType::MXFP4})
    for (int64_t rows : {1, 3, 4, 5, 16, 17, 301})
      for (int64_t cols : {32, 64, 96, 256, 768, 1056, 2048})
        for (int64_t n : {1, 2, 3, 4, 5, 9})
          for (bool packed : {false, true}) {
            if (cols % dtype_block(dt) != 0 || (packed && !packable(dt))) continue;
            const MatmulCase c{dt, rows, cols, n};
            const int64_t ldx = cols + 3, ldy = rows + 2;
            TestWeight w = make_weight(dt, rows, cols, seed++);
            std::unique_ptr<PackedWeight> repacked;
            if (packed) {
              repacked = std::make_unique<PackedWeight>(w.view);
              w.view.packed = repacked->data();
            }
            auto x = random_floats(size_t(n * ldx), seed++);
            if (n > 1) std::fill_n(x.begin() + ldx, dtype_block(dt), 0.0f);  // a zero block (d = 0)
            std::vector<float> y(size_t(n * ldy), NAN);
            detail::matmul_int8(w.view, x.data(), n, ldx, y.data(), ldy, GetParam());
            SCOPED_TRACE(packed ? "repacked" : "row-major");
            for (int64_t j = 0; j < n; ++j) {
              const std::vector<double> xq = quantized_activation(dt, x.data() + j * ldx, cols);
              for (int64_t r = 0; r < rows; ++r) {
                const float* wr = w.values.data() + r * cols;
                double ref = 0, mag = 0;
                for (int64_t b = 0; b < cols; b += 32) {
                  double wmax = 0;
                  for (int64_t k = b; k < b + 32; ++k)
                    wmax = std::max(wmax, std::abs(double(wr[k])));
                  for (int64_t k = b; k < b + 32; ++k) {
                    ref += double(wr[k]) * xq[size_t(k)];
                    mag += 2 * wmax * std::abs(xq[size_t(k)]);
                  }
                }
                const double got = y[size_t(j * ldy + r)];
                ASSERT_NEAR(got, ref, 1e-5 * mag + 1e-30)
                    << case_name(c) << " j=" << j << " r=" << r;
              }
            }
            for (int64_t j = 0; j < n; ++j)  // padding columns of y are left alone
              for (int64_t r = rows; r < ldy; ++r) ASSERT_TRUE(std::isnan(y[size_t(j * ldy + r)]));
          }
}

// A slice of a repacked matrix keeps the repacked copy only where it starts a 16-row group,
// and computes the rows the whole matrix computes.
TEST(Repack, SlicesFollowTheirGroups) {
  if (!detail::int8_dot_enabled()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  for (DType dt : {DType::Q8_0, DType::Q4_0}) {
    TestWeight w = make_weight(dt, 70, 96, 31);
    const PackedWeight repacked(w.view);
    ASSERT_EQ(repacked.bytes(), 5 * 3 * 16 * dtype_bytes(dt, 32));  // 5 groups of 3 blocks
    w.view.packed = repacked.data();
    const auto x = random_floats(96, 32);
    std::vector<float> all(70), part(70, NAN);
    matmul(w.view, x.data(), 1, all.data());
    for (const auto& [begin, count] : {std::pair<int64_t, int64_t>{16, 40}, {32, 38}, {5, 20}}) {
      const WeightView s = w.view.slice_rows(begin, count);
      EXPECT_EQ(s.packed != nullptr, begin % 16 == 0) << begin;
      matmul(s, x.data(), 1, part.data());
      for (int64_t r = 0; r < count; ++r) {
        // The row-major and repacked kernels sum in different orders.
        EXPECT_NEAR(part[size_t(r)], all[size_t(begin + r)],
                    1e-4f * (1 + std::abs(all[size_t(begin + r)])))
            << dtype_name(dt) << " slice " << begin << " row " << r;
      }
    }
  }
}

// MXFP4's E8M0 scales below 2 are subnormal floats (ggml's e8m0_to_fp32_half): the repacked
// kernel's vector conversion against the row-major kernel, scale byte by scale byte.
TEST(Repack, Mxfp4SubnormalScales) {
  if (!detail::int8_dot_enabled()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  TestWeight w = make_weight(DType::MXFP4, 16, 64, 5);
  const uint8_t exps[16] = {0, 1, 2, 3, 100, 127, 128, 130, 0, 1, 2, 60, 126, 129, 200, 1};
  for (int r = 0; r < 16; ++r) w.bytes[size_t(r) * 34] = w.bytes[size_t(r) * 34 + 17] = exps[r];
  const PackedWeight repacked(w.view);
  WeightView p = w.view;
  p.packed = repacked.data();
  const auto x = random_floats(64, 6);
  std::vector<float> a(16), b(16);
  detail::matmul_int8(w.view, x.data(), 1, 64, a.data(), 16, 1);
  detail::matmul_int8(p, x.data(), 1, 64, b.data(), 16, 1);
  for (int r = 0; r < 16; ++r) {
    EXPECT_NE(a[size_t(r)], 0.0f) << "row " << r << " (e = " << int(exps[r]) << ")";
    EXPECT_NEAR(b[size_t(r)], a[size_t(r)], 1e-6f * std::abs(a[size_t(r)]))
        << "row " << r << " (e = " << int(exps[r]) << ")";
  }
}

// At a model's sizes (shape A's expert matrices) the repacked and row-major kernels agree to
// float rounding: the integer sums are exact in both, only the order of the float sums differs.
TEST(Repack, AgreesWithTheRowMajorKernelAtModelSizes) {
  if (!detail::int8_dot_enabled()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  uint32_t seed = 77;
  for (DType dt : {DType::Q8_0, DType::Q4_0, DType::MXFP4, DType::Q4_K, DType::Q6_K})
    for (const auto& [rows, cols] : {std::pair<int64_t, int64_t>{2816, 1024}, {1024, 2816}}) {
      if (cols % dtype_block(dt) != 0) continue;
      TestWeight w = make_weight(dt, rows, cols, seed++);
      const PackedWeight repacked(w.view);
      WeightView p = w.view;
      p.packed = repacked.data();
      const int64_t n = 5;
      const auto x = random_floats(size_t(n * cols), seed++);
      std::vector<float> a(size_t(n * rows)), b(size_t(n * rows));
      detail::matmul_int8(w.view, x.data(), n, cols, a.data(), rows, 2);
      detail::matmul_int8(p, x.data(), n, cols, b.data(), rows, 2);
      double worst = 0, scale = 0;
      for (size_t i = 0; i < a.size(); ++i) {
        worst = std::max(worst, std::abs(double(a[i]) - b[i]));
        scale = std::max(scale, std::abs(double(a[i])));
      }
      EXPECT_LT(worst, 1e-5 * scale) << dtype_name(dt) << " " << rows << "x" << cols;
      std::printf("[ repack ] %s %ldx%ld: worst |row-major - repacked| %.3g of max |y| %.3g\n",
                  std::string(dtype_name(dt)).c_str(), long(rows), long(cols), worst, scale);
    }
}

// W8A8 (gemm_w8a8.h) against this test's own per-row / per-token int8 quantization, summed in
// double: the integer sums are exact, so only the final float scaling rounds. Runs the VNNI
// kernel, and the scalar loop under SY_INT8_DOT=0 (ops_test_float_kernels).
TEST_P(ThreadCounts, W8A8MatchesReference) {
  // The format's definition: d = max|v| / 127 and q = v * (1 / d) in float, rounded to
  // nearest, ties to even.
  auto quantize = [](const float* v, int64_t cols, std::vector<int>& q) {  // returns d
    float amax = 0;
    for (int64_t k = 0; k < cols; ++k) amax = std::max(amax, std::abs(v[k]));
    const float d = amax / 127.0f, id = d != 0 ? 1.0f / d : 0.0f;
    q.resize(size_t(cols));
    for (int64_t k = 0; k < cols; ++k) q[size_t(k)] = int(std::nearbyint(v[k] * id));
    return double(d);
  };
  struct Case {
    int64_t rows, cols, n;
  };
  std::vector<Case> cases;
  for (int64_t rows : {1, 3, 4, 5, 17, 301})
    for (int64_t cols : {1, 33, 64, 100, 1027})
      for (int64_t n : {1, 2, 3, 5, 6, 7, 13, 25}) cases.push_back({rows, cols, n});
  cases.push_back({5, 4096, 130});
  cases.push_back({70, 300, 40});  // activation rows in three L2-sized chunks
  uint32_t seed = 9000;
  for (const auto [rows, cols, n] : cases) {
    const auto src = random_floats(size_t(rows * cols), seed++);
    const WeightView f32{DType::F32, rows, cols, src.data()};
    std::vector<uint8_t> bytes(size_t(rows) * dtype_bytes(DType::I8_ROW, cols));
    quantize_rows_i8(f32, bytes.data(), GetParam());
    const WeightView w{DType::I8_ROW, rows, cols, bytes.data()};
    const int64_t ldx = cols + 3, ldy = rows + 2;
    auto x = random_floats(size_t(n * ldx), seed++);
    if (n > 2) std::fill_n(x.begin() + ldx, cols, 0.0f);  // a zero row (scale 0)
    std::vector<float> y(size_t(n * ldy), NAN);
    matmul(w, x.data(), n, y.data(), ldx, ldy);
    std::vector<int> qw, qx;
    std::vector<float> back(static_cast<size_t>(cols));
    for (int64_t r = 0; r < rows; ++r) {
      const double dw = quantize(src.data() + r * cols, cols, qw);
      to_f32(DType::I8_ROW, w.row(r), back.data(), size_t(cols));  // the stored codes
      for (int64_t k = 0; k < cols; ++k)
        ASSERT_EQ(back[size_t(k)], float(dw) * float(qw[size_t(k)])) << "r=" << r << " k=" << k;
      for (int64_t j = 0; j < n; ++j) {
        const double dx = quantize(x.data() + j * ldx, cols, qx);
        double dot = 0;
        for (int64_t k = 0; k < cols; ++k) dot += double(qw[size_t(k)]) * qx[size_t(k)];
        const double ref = dw * dx * dot;
        ASSERT_NEAR(y[size_t(j * ldy + r)], ref, 1e-6 * std::abs(ref) + 1e-30)
            << "rows=" << rows << " cols=" << cols << " n=" << n << " j=" << j << " r=" << r;
      }
    }
    for (int64_t j = 0; j < n; ++j)  // padding columns of y are left alone
      for (int64_t r = rows; r < ldy; ++r) ASSERT_TRUE(std::isnan(y[size_t(j * ldy + r)]));
    // The repacked copy (gemm_w8a8_packed.h, what ReaLB converts to): exact integer sums and
    // the same epilogue, so the same bits; padding again left alone.
    if (!repack_enabled(DType::I8_ROW)) continue;
    const PackedWeight packed(w);
    WeightView wp = w;
    wp.packed = packed.data();
    std::vector<float> yp(size_t(n * ldy), NAN);
    matmul(wp, x.data(), n, yp.data(), ldx, ldy);
    for (int64_t j = 0; j < n; ++j)
      for (int64_t r = 0; r < ldy; ++r)
        if (r < rows)
          ASSERT_EQ(yp[size_t(j * ldy + r)], y[size_t(j * ldy + r)])
              << "repacked: rows=" << rows << " cols=" << cols << " n=" << n << " j=" << j
              << " r=" << r;
        else
          ASSERT_TRUE(std::isnan(yp[size_t(j * ldy + r)]));
  }
}

// Stored BF16 experts convert through their own widening path: the same bytes as from float32.
TEST(W8A8, ConvertingBf16EqualsConvertingItsFloatValues) {
  for (int64_t cols : {1, 15, 16, 33, 1027}) {
    const TestWeight b = make_weight(DType::BF16, 7, cols, uint32_t(cols));
    const WeightView f{DType::F32, 7, cols, b.values.data()};
    std::vector<uint8_t> from_b(size_t(7) * dtype_bytes(DType::I8_ROW, cols)),
        from_f(from_b.size());
    quantize_rows_i8(b.view, from_b.data(), 2);
    quantize_rows_i8(f, from_f.data(), 1);
    EXPECT_EQ(from_b, from_f) << cols;
  }
}

INSTANTIATE_TEST_SUITE_P(Ops, ThreadCounts, ::testing::Values(1, 2));

TEST(Matmul, OneAndTwoThreadsAgree) {
  for (DType dt : {DType::F32, DType::BF16}) {
    for (int64_t n : {1, 5, 130}) {
      const TestWeight w = make_weight(dt, 333, 700, 11);
      const auto x = random_floats(size_t(n * 700), 12);
      std::vector<float> y1(size_t(n * 333)), y2(size_t(n * 333));
      set_num_threads(1);
      matmul(w.view, x.data(), n, y1.data());
      set_num_threads(2);
      matmul(w.view, x.data(), n, y2.data());
      set_num_threads(0);
      // Both are within tol of the exact product, so within 2 tol of each other.
      for (int64_t j = 0; j < n; ++j)
        for (int64_t r = 0; r < 333; ++r) {
          const double tol = 8.0 * kEps * std::sqrt(700.0) * norm2(&w.values[r * 700], 700) *
                             norm2(&x[j * 700], 700);
          ASSERT_NEAR(y1[j * 333 + r], y2[j * 333 + r], tol) << "n=" << n << " r=" << r;
        }
    }
  }
}

TEST(Matmul, EmptyShapes) {
  const TestWeight w = make_weight(DType::BF16, 5, 0, 1);
  std::vector<float> y(10, NAN);
  matmul(w.view, nullptr, 2, y.data());
  for (float v : y) EXPECT_EQ(v, 0.0f);
  matmul(w.view, nullptr, 0, y.data());
}

// A[m, k] B^T or A B with the scalar product in double.
void check_sgemm(bool transposed_b, int64_t m, int64_t n, int64_t k, float alpha) {
  const int64_t lda = k + 3, ldy = n + 2;
  const int64_t ldb = transposed_b ? k + 1 : n + 4;
  const auto a = random_floats(size_t(m * lda), 21);
  const auto b = random_floats(size_t((transposed_b ? n : k) * ldb), 22);
  std::vector<float> y(size_t(m * ldy), 777.0f);
  if (transposed_b)
    sgemm_nt(m, n, k, a.data(), lda, b.data(), ldb, y.data(), ldy, alpha);
  else
    sgemm_nn(m, n, k, a.data(), lda, b.data(), ldb, y.data(), ldy);
  double worst = 0;
  std::string where;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      double ref = 0, bn = 0;
      for (int64_t t = 0; t < k; ++t) {
        const double bv = transposed_b ? b[j * ldb + t] : b[t * ldb + j];
        ref += double(a[i * lda + t]) * bv;
        bn += bv * bv;
      }
      ref *= alpha;
      const double tol = 4.0 * kEps * std::sqrt(double(k)) * std::abs(alpha) *
                             norm2(&a[i * lda], k) * std::sqrt(bn) +
                         1e-30;
      const double r = std::abs(y[i * ldy + j] - ref) / tol;
      if (!(r <= worst)) {
        worst = std::isnan(r) ? INFINITY : r;
        where = "(" + std::to_string(i) + "," + std::to_string(j) + ") got " +
                std::to_string(y[i * ldy + j]) + " want " + std::to_string(ref);
      }
    }
  EXPECT_LE(worst, 1.0) << (transposed_b ? "sgemm_nt" : "sgemm_nn") << " m=" << m << " n=" << n
                        << " k=" << k << " worst " << where;
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = n; j < ldy; ++j) ASSERT_EQ(y[i * ldy + j], 777.0f);
}

TEST(Sgemm, MatchesScalar) {
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (int64_t m : {1, 3, 17, 130})
      for (int64_t n : {1, 7, 64, 129})
        for (int64_t k : {1, 16, 67}) {
          check_sgemm(true, m, n, k, 0.125f);
          check_sgemm(false, m, n, k, 1.0f);
        }
  }
  set_num_threads(0);
}

// ---- elementwise ----

const int64_t kSizes[] = {1, 2, 7, 15, 16, 17, 33, 130, 1027, 4096};

TEST(Elementwise, RmsNorm) {
  for (int64_t n : kSizes) {
    for (float scale : {1e-3f, 1.0f, 300.0f}) {
      auto x = random_floats(size_t(n), uint32_t(n), -scale, scale);
      const auto w = random_floats(size_t(n), uint32_t(n) + 1, 0.5f, 1.5f);
      std::vector<float> y(static_cast<size_t>(n));
      const float eps = 1e-6f;
      rmsnorm(x.data(), w.data(), n, eps, y.data());
      double ss = 0;
      for (float v : x) ss += double(v) * v;
      const double inv = 1.0 / std::sqrt(ss / double(n) + eps);
      for (int64_t i = 0; i < n; ++i) {
        const double ref = double(x[i]) * inv * w[i];
        ASSERT_NEAR(y[i], ref, 4 * kEps * std::abs(ref) + 1e-30) << "n=" << n << " i=" << i;
      }
      rmsnorm(x.data(), w.data(), n, eps, x.data());  // in place
      for (int64_t i = 0; i < n; ++i) ASSERT_EQ(x[i], y[i]);
    }
  }
}

TEST(Elementwise, Softmax) {
  for (int64_t n : kSizes) {
    for (float scale : {1.0f, 30.0f}) {
      auto x = random_floats(size_t(n), uint32_t(n) + 5, -scale, scale);
      if (n > 3) x[2] = -INFINITY;  // masked position
      const auto x0 = x;
      softmax(x.data(), n);
      double mx = -INFINITY, sum = 0;
      for (float v : x0) mx = std::max(mx, double(v));
      for (float v : x0) sum += std::exp(double(v) - mx);
      double total = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double ref = std::exp(double(x0[i]) - mx) / sum;
        // exp is accurate to a few ulp and amplifies the rounding of x - max (|x - max| eps
        // relative); normalising adds one rounding.
        const double cond = ref == 0 ? 0 : 8 + std::abs(double(x0[i]) - mx);
        ASSERT_NEAR(x[i], ref, cond * kEps * ref + 1e-38) << "n=" << n << " i=" << i;
        total += x[i];
      }
      EXPECT_NEAR(total, 1.0, 8 * kEps * std::sqrt(double(n)));
    }
  }
}

TEST(Elementwise, Swiglu) {
  for (int64_t n : kSizes) {
    auto g = random_floats(size_t(n), uint32_t(n) + 7, -20.0f, 20.0f);
    const auto u = random_floats(size_t(n), uint32_t(n) + 8, -3.0f, 3.0f);
    if (n > 2) g[0] = -150.0f, g[1] = 150.0f;
    std::vector<float> out(static_cast<size_t>(n));
    swiglu(g.data(), u.data(), n, out.data());
    for (int64_t i = 0; i < n; ++i) {
      const double ref = double(g[i]) / (1.0 + std::exp(-double(g[i]))) * u[i];
      ASSERT_NEAR(out[i], ref, 8 * kEps * std::abs(ref) + 1e-30) << "n=" << n << " g=" << g[i];
    }
    auto alias = g;
    swiglu(alias.data(), u.data(), n, alias.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(alias[i], out[i]);
  }
}

TEST(Elementwise, AddAndAxpy) {
  for (int64_t n : kSizes) {
    const auto x = random_floats(size_t(n), uint32_t(n) + 9);
    auto y = random_floats(size_t(n), uint32_t(n) + 10);
    const auto y0 = y;
    add(x.data(), n, y.data());
    for (int64_t i = 0; i < n; ++i) ASSERT_EQ(y[i], y0[i] + x[i]);  // one rounding, exact match
    y = y0;
    axpy(-0.75f, x.data(), n, y.data());
    for (int64_t i = 0; i < n; ++i) {
      const double ref = double(y0[i]) - 0.75 * double(x[i]);
      ASSERT_NEAR(y[i], ref, kEps * (std::abs(ref) + std::abs(0.75 * x[i]))) << i;
    }
  }
}

TEST(Elementwise, RopeNeox) {
  for (int64_t rot_dim : {2, 8, 30, 32, 64, 128}) {
    const int64_t head_dim = rot_dim + 6;  // trailing values must stay untouched
    auto head = random_floats(size_t(head_dim), uint32_t(rot_dim));
    const auto h0 = head;
    const int64_t half = rot_dim / 2;
    std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
    for (int64_t i = 0; i < half; ++i) {
      const double angle = 37.0 * std::pow(10000.0, -2.0 * double(i) / double(rot_dim));
      cs[i] = float(std::cos(angle));
      sn[i] = float(std::sin(angle));
    }
    rope_neox(head.data(), rot_dim, cs.data(), sn.data());
    for (int64_t i = 0; i < half; ++i) {
      const double a = h0[i], b = h0[i + half];
      const double lo = a * cs[i] - b * sn[i], hi = b * cs[i] + a * sn[i];
      const double tol = 2 * kEps * (std::abs(a) + std::abs(b));
      ASSERT_NEAR(head[i], lo, tol) << "rot_dim=" << rot_dim << " i=" << i;
      ASSERT_NEAR(head[i + half], hi, tol) << "rot_dim=" << rot_dim << " i=" << i + half;
    }
    for (int64_t i = rot_dim; i < head_dim; ++i) ASSERT_EQ(head[i], h0[i]);
  }
}

// ---- OPENBLAS_CORETYPE handling ----

// Not a test: the re-executed child of the test below runs it to report the core type.
// CTest does not register *ChildHelper* cases (tests/CMakeLists.txt TEST_FILTER).
TEST(BlasEnvChildHelper, ReportCore) {
  if (std::getenv("SY_OPS_TEST_REPORT_CORE") == nullptr) return;
  std::printf("CORE=%s REEXEC=%s\n", blas_core_name().c_str(),
              std::getenv("SWITCHYARD_BLAS_REEXEC") ? "yes" : "no");
}

TEST(BlasEnv, ReExecsWithFasterCoreType) {
  const std::string best = best_blas_core_type();
  if (best.empty()) GTEST_SKIP() << "CPU without AVX-512: nothing to switch";
  int fds[2];
  ASSERT_EQ(pipe(fds), 0);
  const pid_t pid = fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    dup2(fds[1], 1);
    close(fds[0]);
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    setenv("SY_OPS_TEST_REPORT_CORE", "1", 1);
    unsetenv("SWITCHYARD_KEEP_OPENBLAS_CORETYPE");
    unsetenv("SWITCHYARD_BLAS_REEXEC");
    char arg0[] = "ops_test", arg1[] = "--gtest_filter=BlasEnvChildHelper.ReportCore";
    char* argv[] = {arg0, arg1, nullptr};
    prefer_fast_blas(2, argv);
    _exit(99);  // exec failed
  }
  close(fds[1]);
  std::string out;
  char buf[4096];
  for (ssize_t got; (got = read(fds[0], buf, sizeof buf)) > 0;) out.append(buf, size_t(got));
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  ASSERT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << out;
  EXPECT_NE(out.find("CORE=" + best + " REEXEC=yes"), std::string::npos) << out;
}

TEST(BlasEnv, KeepsCoreTypeWhenAsked) {
  // Both guards make prefer_fast_blas return instead of exec'ing this test process.
  setenv("OPENBLAS_CORETYPE", "Haswell", 1);
  setenv("SWITCHYARD_KEEP_OPENBLAS_CORETYPE", "1", 1);
  char arg0[] = "ops_test";
  char* argv[] = {arg0, nullptr};
  prefer_fast_blas(1, argv);
  unsetenv("SWITCHYARD_KEEP_OPENBLAS_CORETYPE");
  setenv("SWITCHYARD_BLAS_REEXEC", "1", 1);
  prefer_fast_blas(1, argv);
  unsetenv("SWITCHYARD_BLAS_REEXEC");
  unsetenv("OPENBLAS_CORETYPE");
  SUCCEED();
}

}  // namespace
}  // namespace sy::ops
