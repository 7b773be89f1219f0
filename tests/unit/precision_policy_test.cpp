// ReaLB's pieces that need no ranks: the NVFP4 grid (against grids enumerated from the formats'
// bit layouts, not from the rounding code), the decision rule on hand-made loads, and the
// parsers of its flags.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <random>
#include <vector>

#include "expect_error.h"
#include "moe/precision_policy.h"
#include "ops/quantize_q4_0.h"
#include "util/ggml_types.h"
#include "util/nvfp4.h"
#include "util/quant_blocks.h"

namespace sy {
namespace {

// Every finite non-negative value of an FP format with `e` exponent bits (bias 2^(e-1) - 1),
// `m` mantissa bits, subnormals included; E4M3FN drops its all-ones pattern (NaN).
std::vector<float> grid(int e, int m, bool fn) {
  std::vector<float> v;
  const int bias = (1 << (e - 1)) - 1;
  for (int ex = 0; ex < (1 << e); ++ex)
    for (int mt = 0; mt < (1 << m); ++mt) {
      if (fn && ex == (1 << e) - 1 && mt == (1 << m) - 1) continue;
      const float frac = float(mt) / float(1 << m);
      v.push_back(ex == 0 ? std::ldexp(frac, 1 - bias) : std::ldexp(1 + frac, ex - bias));
    }
  return v;  // ascending; index parity = the code's last mantissa bit
}

// The nearest grid value, ties to the even code (round-to-nearest-even).
float nearest(const std::vector<float>& g, float v) {
  size_t best = 0;
  for (size_t i = 1; i < g.size(); ++i) {
    const float d = std::fabs(g[i] - v), db = std::fabs(g[best] - v);
    if (d < db || (d == db && i % 2 == 0)) best = i;
  }
  return g[best];
}

TEST(Nvfp4, E4M3AndE2M1RoundToTheFormatsGrids) {
  const std::vector<float> e4m3 = grid(4, 3, true), e2m1 = grid(2, 1, false);
  ASSERT_EQ(e4m3.back(), 448.0f);
  ASSERT_EQ(e2m1, (std::vector<float>{0, 0.5f, 1, 1.5f, 2, 3, 4, 6}));
  std::mt19937 rng(5);
  std::vector<float> probes;
  for (float g : e4m3) {  // every grid point, every midpoint (ties), and random values
    probes.push_back(g);
    probes.push_back(std::nextafter(g, 0.0f));
  }
  for (size_t i = 0; i + 1 < e4m3.size(); ++i) probes.push_back((e4m3[i] + e4m3[i + 1]) / 2);
  std::uniform_real_distribution<float> exp_dist(-12.0f, 9.0f);
  for (int i = 0; i < 20000; ++i) probes.push_back(std::exp2(exp_dist(rng)));
  for (float v : probes) {
    if (v > 448.0f) continue;
    ASSERT_EQ(round_e4m3(v), nearest(e4m3, v)) << v;
  }
  EXPECT_EQ(round_e4m3(1e6f), 448.0f);               // saturates
  for (float v = -7.0f; v <= 7.0f; v += 0.03125f) {  // steps of 1/32 hit every tie
    const float want = std::fabs(v) >= 6 ? 6.0f : nearest(e2m1, std::fabs(v));
    ASSERT_EQ(round_e2m1(v), std::copysign(want, v)) << v;
  }
}

TEST(Nvfp4, BlocksShareAnE4M3ScaleUnderOneTensorScale) {
  std::mt19937 rng(9);
  std::normal_distribution<float> normal;
  std::vector<float> x(200);  // 12 full blocks and a short one
  for (float& v : x) v = normal(rng);
  x[40] = 30.0f;  // an outlier: its block's scale is the largest
  std::vector<float> q(x.size());
  nvfp4_fake_quantize(x.data(), int64_t(x.size()), q.data());
  float amax = 0;
  for (float v : x) amax = std::max(amax, std::fabs(v));
  const float global = amax / (6.0f * 448.0f);
  const std::vector<float> e2m1 = grid(2, 1, false);
  for (size_t b = 0; b < x.size(); b += 16) {
    const size_t end = std::min(x.size(), b + 16);
    float bmax = 0;
    for (size_t i = b; i < end; ++i) bmax = std::max(bmax, std::fabs(x[i]));
    const float scale = round_e4m3(bmax / 6.0f / global) * global;
    for (size_t i = b; i < end; ++i) {
      // On the E2M1 grid (up to the float rounding of value * scale / scale), at the point
      // nearest x / scale.
      const float unit = q[i] / scale;
      ASSERT_NEAR(std::fabs(unit), nearest(e2m1, std::min(6.0f, std::fabs(x[i] / scale))), 1e-5)
          << i;
      ASSERT_LE(std::fabs(q[i] - x[i]), 0.5f * 2 * scale + 1e-6f) << i;  // half the top gap
    }
  }
  EXPECT_NEAR(q[40], 30.0f, 30.0f * 0.07f);
  std::vector<float> zeros(20, 0.0f), out(20, 1.0f);
  nvfp4_fake_quantize(zeros.data(), 20, out.data());
  for (float v : out) EXPECT_EQ(v, 0.0f);
}

moe::DeviceLoads loads(std::vector<int64_t> rows, int64_t tokens,
                       std::vector<int64_t> tagged = {}) {
  return {std::move(rows), std::move(tagged), tokens};
}

TEST(PrecisionPolicy, RealbSwitchesOnlyHotRanksOfLargeSteps) {
  moe::PrecisionPolicy p;
  p.mode = moe::PrecisionMode::kReaLB;  // defaults: 2048 tokens, 1.15x mean, M_d 0.7
  // 4 ranks, mean 1000: rank 0 at 1.5x, rank 1 at exactly 1.15x, the others below.
  const moe::DeviceLoads l = loads({1500, 1150, 850, 500}, 2048);
  EXPECT_TRUE(moe::choose_precision(p, l, 0).low);
  EXPECT_TRUE(moe::choose_precision(p, l, 1).low);
  EXPECT_FALSE(moe::choose_precision(p, l, 2).low);
  EXPECT_EQ(moe::choose_precision(p, l, 2).why, moe::PrecisionWhy::kNotHot);
  // One token fewer than the threshold: nobody.
  const moe::DeviceLoads small = loads({1500, 1150, 850, 500}, 2047);
  EXPECT_FALSE(moe::choose_precision(p, small, 0).low);
  EXPECT_EQ(moe::choose_precision(p, small, 0).why, moe::PrecisionWhy::kSmallStep);
  // Tags: rank 0 is 70% tagged (switches), rank 1 69.9% (stays, text-dominated).
  const moe::DeviceLoads tagged = loads({1500, 1150, 850, 500}, 4096, {1050, 804, 850, 500});
  EXPECT_TRUE(moe::choose_precision(p, tagged, 0).low);
  EXPECT_FALSE(moe::choose_precision(p, tagged, 1).low);
  EXPECT_EQ(moe::choose_precision(p, tagged, 1).why, moe::PrecisionWhy::kUntagged);
  // A rank without rows never switches; bf16 never, low-all always.
  EXPECT_FALSE(moe::choose_precision(p, loads({0, 0}, 5000), 0).low);
  p.mode = moe::PrecisionMode::kStored;
  EXPECT_FALSE(moe::choose_precision(p, l, 0).low);
  p.mode = moe::PrecisionMode::kLowAll;
  EXPECT_TRUE(moe::choose_precision(p, small, 3).low);
}

TEST(PrecisionPolicy, DeviceLoadsFollowThePlacement) {
  const moe::Placement pl = moe::Placement::from_map({1, 0, 1, 0, 1}, 2);
  const moe::DeviceLoads d = moe::device_loads(pl, {10, 20, 30, 40, 50}, {1, 2, 3, 4, 5}, 77);
  EXPECT_EQ(d.rows, (std::vector<int64_t>{60, 90}));
  EXPECT_EQ(d.tagged, (std::vector<int64_t>{6, 9}));
  EXPECT_EQ(d.global_tokens, 77);
  EXPECT_EQ(moe::device_loads(moe::Placement(), {1, 2}, {}, 3).rows, (std::vector<int64_t>{3}));
}

TEST(PrecisionPolicy, FlagsParseOrNameTheChoices) {
  EXPECT_EQ(moe::parse_precision_mode("realb"), moe::PrecisionMode::kReaLB);
  EXPECT_EQ(moe::parse_low_format("nvfp4"), moe::LowFormat::kNvfp4);
  testing::expect_error([] { moe::parse_precision_mode("fp4"); },
                        {"fp4", "bf16", "low-all", "realb"});
  testing::expect_error([] { moe::parse_low_format("fp8"); }, {"fp8", "int8", "q4", "nvfp4"});
  const moe::ModalityRule r = moe::parse_modality_rule("100-199,7,300-300");
  EXPECT_TRUE(r.tagged(100) && r.tagged(199) && r.tagged(7) && r.tagged(300));
  EXPECT_FALSE(r.tagged(99) || r.tagged(200) || r.tagged(8));
  testing::expect_error([] { moe::parse_modality_rule("20-10"); }, {"20-10", "ends before"});
  testing::expect_error([] { moe::parse_modality_rule("1,,2"); }, {"--modality-ids"});
  testing::expect_error([] { moe::parse_modality_rule("a-5"); }, {"--modality-ids"});
}

// ReaLB's run-time q4 conversion (vectorised) must give the bytes of the reference quantizer,
// which tests/reference/gguf_reference.py checks bit for bit against ggml's definition. The
// blocks include the cases its scalar loop decides by order: ties in magnitude with opposite
// signs (the first wins), all zeros, values that land on x / d + 8.5 = 16.5 (clamped to 15).
TEST(LowPrecision, Q4ConversionGivesTheReferenceQuantizersBytes) {
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.0f, 0.02f);
  const int64_t cols = 32 * 24, rows = 37;
  std::vector<float> w(size_t(rows * cols));
  for (float& v : w) v = normal(rng);
  for (int64_t r = 0; r < rows; ++r) {
    float* row = w.data() + r * cols;
    row[5] = 0.5f, row[21] = -0.5f;              // block 0: +0.5 first
    row[32 + 3] = -0.25f, row[32 + 30] = 0.25f;  // block 1: -0.25 first
    std::fill(row + 64, row + 96, 0.0f);         // block 2: all zeros, d = 0
    row[96] = -1.0f, row[97] = 1.0f;             // block 3: x / d + 8.5 = 16.5 for row[97]
    row[128 + 31] = 3e-39f;                      // a subnormal
  }
  std::vector<uint16_t> bf16(w.size());
  for (size_t i = 0; i < w.size(); ++i) bf16[i] = f32_to_bf16(w[i]);
  const size_t row_bytes = dtype_bytes(DType::Q4_0, cols);
  for (DType dtype : {DType::F32, DType::BF16})
    for (int threads : {1, 2}) {
      SCOPED_TRACE(std::string(dtype_name(dtype)) + ", threads " + std::to_string(threads));
      const void* data = dtype == DType::F32 ? static_cast<const void*>(w.data()) : bf16.data();
      std::vector<uint8_t> got(size_t(rows) * row_bytes), want(got.size());
      ops::quantize_rows_q4_0({dtype, rows, cols, data}, got.data(), threads);
      std::vector<float> x(static_cast<size_t>(cols));
      for (int64_t r = 0; r < rows; ++r) {
        if (dtype == DType::F32)
          std::copy_n(w.data() + r * cols, cols, x.data());
        else
          for (int64_t k = 0; k < cols; ++k) x[size_t(k)] = bf16_to_f32(bf16[size_t(r * cols + k)]);
        quantize_row(GgmlType::Q4_0, x.data(), want.data() + size_t(r) * row_bytes, cols);
      }
      EXPECT_EQ(got, want);
      // The tie rule is visible: block 0 of row 0 scales by +0.5 / -8, block 1 by -0.25 / -8.
      EXPECT_EQ(f16_to_f32(uint16_t(got[0] | got[1] << 8)), -0.0625f);
      EXPECT_EQ(f16_to_f32(uint16_t(got[18] | got[19] << 8)), 0.03125f);
    }
}

}  // namespace
}  // namespace sy
