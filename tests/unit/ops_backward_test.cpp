// The training kernels of src/ops/elementwise.h (dot, sum_squares, scale, swiglu_backward,
// rmsnorm_backward, adamw_update) and the row kernels of src/train/row_ops.h against plain
// scalar versions written here in double (ops_test.cpp covers the inference kernels).
// Tolerances come from float32 rounding: a float-accumulated n-term dot product errs by about
// eps * sqrt(n) * |a| * |b| (random-walk bound, Cauchy-Schwarz on sum |a_i b_i|) with a safety
// factor; elementwise results by a few eps relative to the sum of the magnitudes of the terms
// they combine (so cancellation is allowed for). Lengths include ones that are not multiples
// of any SIMD width, to reach the scalar tails.
#include <gtest/gtest.h>

#include <algorithm>
#include <cfloat>
#include <cmath>
#include <limits>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "ops/elementwise.h"
#include "ops/norm_rows.h"
#include "ops/threads.h"
#include "random_data.h"
#include "train/row_ops.h"

namespace sy {
namespace {

constexpr double kEps = std::numeric_limits<float>::epsilon();

const int64_t kSizes[] = {1, 2, 7, 15, 16, 17, 33, 130, 1000, 1027, 4096};

using sy::testing::random_floats;

double norm2(const float* v, int64_t n) {
  double s = 0;
  for (int64_t i = 0; i < n; ++i) s += double(v[i]) * v[i];
  return std::sqrt(s);
}

// The element with the largest error / tolerance of one comparison; ok() fails naming it.
class WorstElement {
 public:
  void check(int64_t i, double got, double want, double tol) {
    const double err = std::abs(got - want);
    const double ratio = err == 0 ? 0 : std::isnan(err) ? INFINITY : err / tol;
    if (index_ < 0 || ratio > ratio_) {
      ratio_ = ratio, index_ = i, got_ = got, want_ = want, tol_ = tol;
    }
  }
  ::testing::AssertionResult ok() const {
    if (ratio_ <= 1.0) return ::testing::AssertionSuccess();
    std::ostringstream s;
    s.precision(9);
    s << "worst at element " << index_ << ": got " << got_ << " want " << want_ << " (err "
      << std::abs(got_ - want_) << " > tol " << tol_ << ")";
    return ::testing::AssertionFailure() << s.str();
  }

 private:
  double ratio_ = 0, got_ = 0, want_ = 0, tol_ = 0;
  int64_t index_ = -1;
};

// ---- ops:: kernels ----

TEST(ElementwiseBackward, Dot) {
  for (int64_t n : kSizes) {
    for (float scale : {1e-3f, 1.0f, 300.0f}) {
      const auto a = random_floats(size_t(n), uint32_t(n) + 1, -scale, scale);
      const auto b = random_floats(size_t(n), uint32_t(n) + 2, -3.0f, 3.0f);
      double ref = 0;
      for (int64_t i = 0; i < n; ++i) ref += double(a[i]) * b[i];
      const double tol =
          4 * kEps * std::sqrt(double(n)) * norm2(a.data(), n) * norm2(b.data(), n) + 1e-30;
      const float got = ops::dot(a.data(), b.data(), n);
      EXPECT_NEAR(got, ref, tol) << "n=" << n << " scale=" << scale;
    }
  }
  EXPECT_EQ(ops::dot(nullptr, nullptr, 0), 0.0f);
}

// Float products are exact in double: the only error is the double accumulation, n * 2^-53
// relative at most, in the kernel and in the reference.
TEST(ElementwiseBackward, SumSquares) {
  for (int64_t n : kSizes) {
    // 1e20: squares overflow float but not the double accumulator; 1e-20: squares underflow
    // float but not double.
    for (float scale : {1e-20f, 1e-3f, 1.0f, 300.0f, 1e20f}) {
      const auto x = random_floats(size_t(n), uint32_t(n) + 3, -scale, scale);
      double ref = 0;
      for (float v : x) ref += double(v) * double(v);
      const double got = ops::sum_squares(x.data(), n);
      EXPECT_TRUE(std::isfinite(got)) << "n=" << n << " scale=" << scale;
      EXPECT_NEAR(got, ref, 2 * double(n + 2) * DBL_EPSILON * ref)
          << "n=" << n << " scale=" << scale;
    }
  }
  EXPECT_EQ(ops::sum_squares(nullptr, 0), 0.0);
}

// One rounding per element: the float product, exactly.
TEST(ElementwiseBackward, Scale) {
  for (int64_t n : kSizes) {
    for (float a : {0.0f, -0.75f, 1.0f, 3.1e-3f, 1e30f}) {
      auto y = random_floats(size_t(n), uint32_t(n) + 4, -2.0f, 2.0f);
      const auto y0 = y;
      ops::scale(a, n, y.data());
      for (int64_t i = 0; i < n; ++i)
        ASSERT_EQ(y[i], y0[i] * a) << "n=" << n << " a=" << a << " i=" << i;
    }
  }
}

// dgate = dh * up * s * (1 + g (1 - s)), dup = dh * g * s with s = sigmoid(g), in double.
// Tolerance: exp and the reciprocal give s a few eps relative error; 1 - s then carries an
// absolute error of a few eps, which g multiplies, so dgate is held to
// 8 eps |dh up| s (1 + |g| (1 - s) + |g|) (the magnitudes of its terms), dup to 8 eps |dup|.
// A floor of 1e-30 covers g = -150, where the kernel clamps exp's argument at 80
// (s ~ 1.8e-35 instead of ~7e-66: both are nothing next to 1e-30).
void swiglu_backward_scalar(const float* dh, const float* g, const float* u, int64_t n,
                            std::vector<double>& dg, std::vector<double>& du,
                            std::vector<double>& dg_tol, std::vector<double>& du_tol) {
  dg.resize(static_cast<size_t>(n)), du.resize(static_cast<size_t>(n)),
      dg_tol.resize(static_cast<size_t>(n)), du_tol.resize(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    const double gi = g[i], s = 1.0 / (1.0 + std::exp(-gi));
    du[size_t(i)] = double(dh[i]) * gi * s;
    dg[size_t(i)] = double(dh[i]) * u[i] * s * (1.0 + gi * (1.0 - s));
    du_tol[size_t(i)] = 8 * kEps * std::abs(du[size_t(i)]) + 1e-30;
    dg_tol[size_t(i)] = 8 * kEps * std::abs(double(dh[i]) * u[i]) * s *
                            (1.0 + std::abs(gi) * (1.0 - s) + std::abs(gi)) +
                        1e-30;
  }
}

// Compares a SwiGLU backward (dh, g, u -> dg, du) with the scalar twin, worst element each.
template <typename Fn>
void expect_swiglu_backward_matches(Fn fn, const std::vector<float>& dh,
                                    const std::vector<float>& g, const std::vector<float>& u,
                                    const std::string& what) {
  const int64_t n = int64_t(g.size());
  std::vector<float> dg(size_t(n), NAN), du(size_t(n), NAN);
  fn(dh.data(), g.data(), u.data(), n, dg.data(), du.data());
  std::vector<double> rg, ru, tg, tu;
  swiglu_backward_scalar(dh.data(), g.data(), u.data(), n, rg, ru, tg, tu);
  WorstElement wg, wu;
  for (int64_t i = 0; i < n; ++i) {
    wg.check(i, dg[size_t(i)], rg[size_t(i)], tg[size_t(i)]);
    wu.check(i, du[size_t(i)], ru[size_t(i)], tu[size_t(i)]);
  }
  EXPECT_TRUE(wg.ok()) << "dgate, " << what;
  EXPECT_TRUE(wu.ok()) << "dup, " << what;
}

TEST(ElementwiseBackward, SwigluBackward) {
  for (int64_t n : kSizes) {
    auto g = random_floats(size_t(n), uint32_t(n) + 7, -20.0f, 20.0f);
    const auto u = random_floats(size_t(n), uint32_t(n) + 8, -3.0f, 3.0f);
    const auto dh = random_floats(size_t(n), uint32_t(n) + 9, -2.0f, 2.0f);
    if (n > 3) g[0] = -150.0f, g[1] = 150.0f, g[2] = -1.2785f;  // clamp, saturation, dsilu ~ 0
    expect_swiglu_backward_matches(ops::swiglu_backward, dh, g, u, "n=" + std::to_string(n));
  }
}

// One row: xhat = x rstd; dw += dy xhat; dx (+)= rstd (dy w - xhat mean(dy w xhat)), in double
// with the kernel's (float) rstd as given. The mean is a float-accumulated dot product
// (tolerance 4 eps sqrt(n) |dy w| |xhat| / n); each dx adds a few roundings of its terms.
struct RmsNormBackwardRef {
  std::vector<double> dx, dw, dx_tol, dw_tol;
};

RmsNormBackwardRef rmsnorm_backward_scalar(const float* dy, const float* x, const float* w,
                                           float rstd, int64_t n, const float* dx0,
                                           const float* dw0) {
  RmsNormBackwardRef r;
  r.dx.resize(static_cast<size_t>(n)), r.dw.resize(static_cast<size_t>(n)),
      r.dx_tol.resize(static_cast<size_t>(n));
  r.dw_tol.resize(static_cast<size_t>(n));
  std::vector<double> dyw(static_cast<size_t>(n)), xhat(static_cast<size_t>(n));
  double dot = 0;
  for (int64_t i = 0; i < n; ++i) {
    dyw[size_t(i)] = double(dy[i]) * w[i];
    xhat[size_t(i)] = double(x[i]) * rstd;
    dot += dyw[size_t(i)] * xhat[size_t(i)];
  }
  const double mean = dot / double(n);
  double dyw_norm = 0, xhat_norm = 0;
  for (int64_t i = 0; i < n; ++i) {
    dyw_norm += dyw[size_t(i)] * dyw[size_t(i)];
    xhat_norm += xhat[size_t(i)] * xhat[size_t(i)];
  }
  const double mean_tol =
      4 * kEps * std::sqrt(double(n)) * std::sqrt(dyw_norm * xhat_norm) / double(n);
  for (int64_t i = 0; i < n; ++i) {
    const double t = double(dy[i]) * xhat[size_t(i)];
    r.dw[size_t(i)] = double(dw0[i]) + t;
    r.dw_tol[size_t(i)] = 4 * kEps * (std::abs(double(dw0[i])) + std::abs(t)) + 1e-30;
    const double a = dyw[size_t(i)], b = xhat[size_t(i)] * mean;
    const double g = double(rstd) * (a - b);
    const double base = dx0 ? double(dx0[i]) : 0.0;
    r.dx[size_t(i)] = base + g;
    r.dx_tol[size_t(i)] = double(rstd) * (std::abs(xhat[size_t(i)]) * mean_tol +
                                          6 * kEps * (std::abs(a) + std::abs(b))) +
                          2 * kEps * std::abs(base) + 1e-30;
  }
  return r;
}

TEST(ElementwiseBackward, RmsNormBackward) {
  for (int64_t n : kSizes) {
    for (float scale : {1e-3f, 1.0f, 300.0f}) {
      for (bool accumulate : {false, true}) {
        const uint32_t seed = uint32_t(n) * 10 + (accumulate ? 1 : 0);
        const auto x = random_floats(size_t(n), seed, -scale, scale);
        const auto w = random_floats(size_t(n), seed + 1, 0.5f, 1.5f);
        const auto dy = random_floats(size_t(n), seed + 2, -2.0f, 2.0f);
        const auto dx0 = random_floats(size_t(n), seed + 3, -1.0f, 1.0f);
        const auto dw0 = random_floats(size_t(n), seed + 4, -1.0f, 1.0f);
        const float rstd =
            float(1.0 / std::sqrt(norm2(x.data(), n) * norm2(x.data(), n) / double(n) + 1e-6));
        std::vector<float> dx = accumulate ? dx0 : std::vector<float>(size_t(n), NAN);
        std::vector<float> dw = dw0;
        ops::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd, n, dx.data(), dw.data(),
                              accumulate);
        const RmsNormBackwardRef r = rmsnorm_backward_scalar(
            dy.data(), x.data(), w.data(), rstd, n, accumulate ? dx0.data() : nullptr, dw0.data());
        WorstElement wx, ww;
        for (int64_t i = 0; i < n; ++i) {
          wx.check(i, dx[size_t(i)], r.dx[size_t(i)], r.dx_tol[size_t(i)]);
          ww.check(i, dw[size_t(i)], r.dw[size_t(i)], r.dw_tol[size_t(i)]);
        }
        EXPECT_TRUE(wx.ok()) << "dx, n=" << n << " scale=" << scale << " accumulate=" << accumulate;
        EXPECT_TRUE(ww.ok()) << "dw, n=" << n << " scale=" << scale << " accumulate=" << accumulate;
      }
    }
  }
}

// torch.optim.AdamW's update written from its formulas, one float at a time, in torch's order
// of roundings (theta * decay rounds on its own; the two fused multiply-adds of torch's
// vectorized kernel): the kernel promises this bit for bit. GCC must not contract
// theta * decay + step into a fused multiply-add here either.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
void adamw_scalar_float(const ops::AdamWScalars& k, float grad_scale, float* theta,
                        const float* grad, float* m, float* v, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    const float g = grad_scale != 1.0f ? grad[i] * grad_scale : grad[i];
    const float decayed = theta[i] * k.decay;
    m[i] = std::fma(g, k.one_minus_b1, m[i] * k.b1);
    v[i] = std::fma(k.one_minus_b2 * g, g, v[i] * k.b2);
    const float denom = std::sqrt(v[i]) / k.bc2_sqrt + k.eps;
    theta[i] = decayed + k.neg_step_size * m[i] / denom;
  }
}
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

TEST(ElementwiseBackward, AdamWUpdate) {
  // Step 3 of lr 1e-2, weight decay 0.1, betas (0.9, 0.95), eps 1e-8, as adamw.cpp derives them.
  const double lr = 1e-2, wd = 0.1, b1 = 0.9, b2 = 0.95;
  const int t = 3;
  ops::AdamWScalars k;
  k.decay = float(1 - lr * wd);
  k.b1 = float(b1), k.one_minus_b1 = float(1 - b1);
  k.b2 = float(b2), k.one_minus_b2 = float(1 - b2);
  k.bc2_sqrt = float(std::sqrt(1 - std::pow(b2, t)));
  k.eps = 1e-8f;
  k.neg_step_size = float(-lr / (1 - std::pow(b1, t)));
  for (int64_t n : kSizes) {
    for (float grad_scale : {1.0f, 0.37f}) {
      const uint32_t seed = uint32_t(n) * 7 + (grad_scale == 1.0f ? 0 : 1);
      const auto theta0 = random_floats(size_t(n), seed, -1.0f, 1.0f);
      auto grad = random_floats(size_t(n), seed + 1, -3.0f, 3.0f);
      const auto m0 = random_floats(size_t(n), seed + 2, -0.5f, 0.5f);
      const auto v0 = random_floats(size_t(n), seed + 3, 0.0f, 2.0f);
      if (n > 2) grad[0] = 0.0f, grad[1] = 1e-20f;  // v may be tiny: eps dominates denom
      auto theta = theta0, m = m0, v = v0;
      ops::adamw_update(k, grad_scale, theta.data(), grad.data(), m.data(), v.data(), n);
      auto theta_f = theta0, m_f = m0, v_f = v0;
      adamw_scalar_float(k, grad_scale, theta_f.data(), grad.data(), m_f.data(), v_f.data(), n);
      const std::string what =
          "n=" + std::to_string(n) + " grad_scale=" + std::to_string(grad_scale);
      EXPECT_EQ(theta, theta_f) << what << ": theta not bit for bit";
      EXPECT_EQ(m, m_f) << what << ": m not bit for bit";
      EXPECT_EQ(v, v_f) << what << ": v not bit for bit";
      // In double from the same float scalars. m and v combine two terms each (m may cancel);
      // the step's relative error is that of m plus half that of v plus a few roundings.
      WorstElement wt, wm, wv;
      for (int64_t i = 0; i < n; ++i) {
        const double g = double(grad[i]) * grad_scale;
        const double mt = double(k.b1) * m0[i], gt = double(k.one_minus_b1) * g;
        const double rm = mt + gt;
        const double rv = double(k.b2) * v0[i] + double(k.one_minus_b2) * g * g;
        const double denom = std::sqrt(rv) / double(k.bc2_sqrt) + double(k.eps);
        const double decayed = double(theta0[i]) * k.decay, step = k.neg_step_size * rm / denom;
        wm.check(i, m[i], rm, 3 * kEps * (std::abs(mt) + std::abs(gt)) + 1e-38);
        wv.check(i, v[i], rv, 4 * kEps * rv + 1e-38);
        wt.check(i, theta[i], decayed + step,
                 2 * kEps * std::abs(decayed) +
                     std::abs(double(k.neg_step_size)) / denom * 3 * kEps *
                         (std::abs(mt) + std::abs(gt)) +
                     8 * kEps * std::abs(step) + 1e-38);
      }
      EXPECT_TRUE(wt.ok()) << "theta, " << what;
      EXPECT_TRUE(wm.ok()) << "m, " << what;
      EXPECT_TRUE(wv.ok()) << "v, " << what;
    }
  }
}

// ---- train:: row kernels ----

const int64_t kRowCounts[] = {1, 3, 64, 65, 200};  // 64 rows per dw chunk in rmsnorm_backward

TEST(RowOps, RmsNormForward) {
  for (int64_t n : {1, 7, 33, 1000}) {
    for (int64_t rows : {1, 3, 65}) {
      const auto x = random_floats(size_t(rows * n), uint32_t(n + rows), -2.0f, 2.0f);
      const auto w = random_floats(size_t(n), uint32_t(n) + 1, 0.5f, 1.5f);
      const float eps = 1e-5f;
      std::vector<float> y(size_t(rows * n), NAN), rstd(size_t(rows), NAN);
      ops::rmsnorm_rows(x.data(), w.data(), rows, n, eps, y.data(), rstd.data());
      WorstElement wy, wr;
      for (int64_t r = 0; r < rows; ++r) {
        const double ss = norm2(&x[size_t(r * n)], n);
        const double ref_rstd = 1.0 / std::sqrt(ss * ss / double(n) + eps);
        wr.check(r, rstd[size_t(r)], ref_rstd, kEps * ref_rstd);
        for (int64_t i = 0; i < n; ++i) {
          const double ref = double(x[size_t(r * n + i)]) * ref_rstd * w[size_t(i)];
          wy.check(r * n + i, y[size_t(r * n + i)], ref, 4 * kEps * std::abs(ref) + 1e-30);
        }
      }
      EXPECT_TRUE(wr.ok()) << "rstd, n=" << n << " rows=" << rows;
      EXPECT_TRUE(wy.ok()) << "y, n=" << n << " rows=" << rows;
    }
  }
}

// Rows of the one-row reference; dw sums rows (in float, by chunks of rows): tolerance
// 4 eps sqrt(rows + 1) times the sum of the magnitudes added, like a dot product's.
TEST(RowOps, RmsNormBackward) {
  for (int64_t n : {1, 7, 33, 1000}) {
    for (int64_t rows : kRowCounts) {
      for (bool accumulate : {false, true}) {
        const uint32_t seed = uint32_t(n * 1000 + rows * 2) + (accumulate ? 1 : 0);
        const auto x = random_floats(size_t(rows * n), seed, -2.0f, 2.0f);
        const auto w = random_floats(size_t(n), seed + 1, 0.5f, 1.5f);
        const auto dy = random_floats(size_t(rows * n), seed + 2, -1.0f, 1.0f);
        const auto dx0 = random_floats(size_t(rows * n), seed + 3, -1.0f, 1.0f);
        const auto dw0 = random_floats(size_t(n), seed + 4, -1.0f, 1.0f);
        std::vector<float> y(size_t(rows * n)), rstd(static_cast<size_t>(rows));
        ops::rmsnorm_rows(x.data(), w.data(), rows, n, 1e-5f, y.data(), rstd.data());
        std::vector<float> dx = accumulate ? dx0 : std::vector<float>(size_t(rows * n), NAN);
        std::vector<float> dw = dw0;
        train::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), rows, n, dx.data(),
                                dw.data(), accumulate);
        std::vector<double> ref_dw(dw0.begin(), dw0.end()), dw_mag(static_cast<size_t>(n));
        for (int64_t i = 0; i < n; ++i) dw_mag[size_t(i)] = std::abs(double(dw0[size_t(i)]));
        const std::vector<float> zeros(size_t(n), 0.0f);
        WorstElement wx, ww;
        for (int64_t r = 0; r < rows; ++r) {
          const size_t o = size_t(r * n);
          const RmsNormBackwardRef ref =
              rmsnorm_backward_scalar(&dy[o], &x[o], w.data(), rstd[size_t(r)], n,
                                      accumulate ? &dx0[o] : nullptr, zeros.data());
          for (int64_t i = 0; i < n; ++i) {
            wx.check(r * n + i, dx[o + size_t(i)], ref.dx[size_t(i)], ref.dx_tol[size_t(i)]);
            ref_dw[size_t(i)] += ref.dw[size_t(i)];
            dw_mag[size_t(i)] += std::abs(ref.dw[size_t(i)]);
          }
        }
        for (int64_t i = 0; i < n; ++i)
          ww.check(i, dw[size_t(i)], ref_dw[size_t(i)],
                   4 * kEps * std::sqrt(double(rows + 1)) * dw_mag[size_t(i)] + 1e-30);
        const std::string what = "n=" + std::to_string(n) + " rows=" + std::to_string(rows) +
                                 " accumulate=" + std::to_string(accumulate);
        EXPECT_TRUE(wx.ok()) << "dx, " << what;
        EXPECT_TRUE(ww.ok()) << "dw, " << what;
      }
    }
  }
}

// dw sums fixed chunks of rows in a fixed order: the same bits at any thread count.
TEST(RowOps, RmsNormBackwardIndependentOfThreadCount) {
  const int64_t rows = 200, n = 33;
  const auto x = random_floats(size_t(rows * n), 71, -2.0f, 2.0f);
  const auto w = random_floats(size_t(n), 72, 0.5f, 1.5f);
  const auto dy = random_floats(size_t(rows * n), 73);
  std::vector<float> y(size_t(rows * n)), rstd(static_cast<size_t>(rows));
  ops::rmsnorm_rows(x.data(), w.data(), rows, n, 1e-5f, y.data(), rstd.data());
  std::vector<std::vector<float>> dws, dxs;
  for (int threads : {1, 2}) {
    ops::set_num_threads(threads);
    std::vector<float> dx(size_t(rows * n)), dw(size_t(n), 0.0f);
    train::rmsnorm_backward(dy.data(), x.data(), w.data(), rstd.data(), rows, n, dx.data(),
                            dw.data(), false);
    dws.push_back(dw);
    dxs.push_back(dx);
  }
  ops::set_num_threads(0);
  EXPECT_EQ(dws[0], dws[1]);
  EXPECT_EQ(dxs[0], dxs[1]);
}

// The row version splits long inputs into chunks (in parallel past 4 chunks of 2^14).
TEST(RowOps, SwigluBackward) {
  for (int64_t n : {int64_t(1), int64_t(7), int64_t(33), int64_t(1000), (int64_t(1) << 14) + 3,
                    5 * (int64_t(1) << 14) + 17}) {
    const auto g = random_floats(size_t(n), uint32_t(n) + 17, -12.0f, 12.0f);
    const auto u = random_floats(size_t(n), uint32_t(n) + 18, -3.0f, 3.0f);
    const auto dh = random_floats(size_t(n), uint32_t(n) + 19, -2.0f, 2.0f);
    expect_swiglu_backward_matches(train::swiglu_backward, dh, g, u,
                                   "row version, n=" + std::to_string(n));
  }
}

// The transpose of the rotation: (da, db) -> (da c + db s, db c - da s) on pairs
// (i, i + rot_dim/2); values past rot_dim stay. Two products and a sum: 2 eps (|da| + |db|).
TEST(RowOps, RopeBackward) {
  for (int64_t rot_dim : {2, 8, 30, 32, 64, 128}) {
    for (double pos : {0.0, 1.0, 37.0, 4095.0}) {
      const int64_t head_dim = rot_dim + 6, half = rot_dim / 2;
      auto d = random_floats(size_t(head_dim), uint32_t(rot_dim) + uint32_t(pos));
      const auto d0 = d;
      std::vector<float> cs(static_cast<size_t>(half)), sn(static_cast<size_t>(half));
      for (int64_t i = 0; i < half; ++i) {
        const double angle = pos * std::pow(10000.0, -2.0 * double(i) / double(rot_dim));
        cs[size_t(i)] = float(std::cos(angle));
        sn[size_t(i)] = float(std::sin(angle));
      }
      train::rope_backward(d.data(), rot_dim, cs.data(), sn.data());
      WorstElement w;
      for (int64_t i = 0; i < half; ++i) {
        const double a = d0[size_t(i)], b = d0[size_t(i + half)];
        const double c = cs[size_t(i)], s = sn[size_t(i)];
        const double tol = 2 * kEps * (std::abs(a) + std::abs(b)) + 1e-38;
        w.check(i, d[size_t(i)], a * c + b * s, tol);
        w.check(i + half, d[size_t(i + half)], b * c - a * s, tol);
      }
      EXPECT_TRUE(w.ok()) << "rot_dim=" << rot_dim << " pos=" << pos;
      for (int64_t i = rot_dim; i < head_dim; ++i) ASSERT_EQ(d[size_t(i)], d0[size_t(i)]);
    }
  }
}

// loss = sum over rows with a target of lse(z) - z[target]; d(loss * scale)/dz =
// scale (softmax(z) - onehot); rows without a target get 0. The float softmax errs by
// (8 + |z - max|) eps relative (ops_test.cpp's bound), so each row's loss by that much absolute
// and each gradient element by that much times scale p, plus a rounding of the scale and of the
// target's subtraction.
TEST(RowOps, CrossEntropy) {
  for (int64_t vocab : {1, 7, 33, 1000}) {
    for (float scale : {1.0f, 0.25f}) {
      const int64_t rows = 6;
      const auto z0 = random_floats(size_t(rows * vocab), uint32_t(vocab) + 23, -8.0f, 8.0f);
      std::vector<int32_t> targets(static_cast<size_t>(rows));
      std::mt19937 rng(static_cast<uint32_t>(vocab));
      std::uniform_int_distribution<int32_t> pick(0, int32_t(vocab - 1));
      for (auto& t : targets) t = pick(rng);
      targets[2] = -1;
      auto z = z0;
      const double loss =
          train::cross_entropy_forward_backward(z.data(), targets.data(), rows, vocab, scale);
      double ref_loss = 0, loss_tol = 1e-300;
      WorstElement wg;
      for (int64_t r = 0; r < rows; ++r) {
        const float* zr = &z0[size_t(r * vocab)];
        const int32_t target = targets[size_t(r)];
        double mx = -INFINITY, sum = 0;
        for (int64_t i = 0; i < vocab; ++i) mx = std::max(mx, double(zr[i]));
        for (int64_t i = 0; i < vocab; ++i) sum += std::exp(double(zr[i]) - mx);
        if (target >= 0) {
          ref_loss += mx + std::log(sum) - zr[target];
          loss_tol += (8 + std::abs(zr[target] - mx)) * kEps;
        }
        for (int64_t i = 0; i < vocab; ++i) {
          const double p = std::exp(double(zr[i]) - mx) / sum;
          const bool is_target = i == target;
          const double ref = target < 0 ? 0.0 : scale * (p - (is_target ? 1.0 : 0.0));
          const double tol = target < 0 ? 0.0
                                        : std::abs(scale) * ((9 + std::abs(zr[i] - mx)) * kEps * p +
                                                             (is_target ? 2 * kEps : 0.0)) +
                                              1e-38;
          wg.check(r * vocab + i, z[size_t(r * vocab + i)], ref, tol);
        }
      }
      EXPECT_NEAR(loss, ref_loss, loss_tol) << "vocab=" << vocab << " scale=" << scale;
      EXPECT_TRUE(wg.ok()) << "d logits, vocab=" << vocab << " scale=" << scale;
    }
  }
}

}  // namespace
}  // namespace sy
