// Finite-difference checks of gradients of float32 code: central differences of a loss that
// the caller evaluates in double, coordinate by coordinate or along one direction.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <sstream>
#include <utility>
#include <vector>

namespace sy::testing {

// Compares analytic gradient `g` with central differences of f at `x` (perturbing x in place).
// Coordinates where `stable` says the discrete choices changed are skipped (counted).
inline void expect_grad_matches(std::vector<float>& x, const std::vector<float>& g,
                                const std::function<double()>& f,
                                const std::function<bool()>& stable, double h, double rel_tol,
                                const char* what) {
  double gmax = 1e-12;
  for (float v : g) gmax = std::max(gmax, double(std::abs(v)));
  int checked = 0, skipped = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    const float x0 = x[i];
    x[i] = float(x0 + h);
    const double fp = f();
    const bool sp = stable();
    x[i] = float(x0 - h);
    const double fm = f();
    const bool sm = stable();
    x[i] = x0;
    if (!sp || !sm) {
      ++skipped;
      continue;
    }
    const double fd = (fp - fm) / (2 * h);
    EXPECT_NEAR(fd, g[i], rel_tol * gmax) << what << " coordinate " << i;
    ++checked;
  }
  EXPECT_GT(checked, int(x.size()) / 2)
      << what << ": too many coordinates changed the routing (" << skipped << " skipped)";
}

// The derivative of f at x along `dir`, two ways: the fourth-order central difference
//   (8 (f(x+h) - f(x-h)) - (f(x+2h) - f(x-2h))) / 12h,  x+-a = float(x +- a dir),
// and the gradient g dotted with the same combination of the steps the float inputs actually
// took, so rounding x +- a dir to float is no error. Its O(h^4) truncation error allows a step
// large enough that the float32 forward's rounding noise, divided by h, stays small. x is
// restored.
struct Directional {
  double fd = 0, analytic = 0;
  double g_norm = 0, step_norm = 0;  // |g|, |combined step / h|
};

inline Directional directional_derivative(std::vector<float>& x, const std::vector<float>& g,
                                          const std::vector<float>& dir, double h,
                                          const std::function<double()>& f) {
  const std::vector<float> x0 = x;
  std::vector<double> step(x.size(), 0.0);  // the combination of the applied steps, over h
  double combined = 0;
  for (const auto& [a, weight] : {std::pair{1.0, 8.0}, std::pair{2.0, -1.0}}) {
    for (int sign : {1, -1}) {
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] = float(double(x0[i]) + sign * a * h * dir[i]);
        step[i] += sign * weight * (double(x[i]) - double(x0[i])) / (12 * h);
      }
      combined += sign * weight * f() / (12 * h);
    }
  }
  x = x0;
  Directional d;
  d.fd = combined;
  for (size_t i = 0; i < x.size(); ++i) {
    d.analytic += double(g[i]) * step[i];
    d.g_norm += double(g[i]) * g[i];
    d.step_norm += step[i] * step[i];
  }
  d.g_norm = std::sqrt(d.g_norm);
  d.step_norm = std::sqrt(d.step_norm);
  return d;
}

// |fd - analytic| <= rel_tol |analytic|, where the direction is not nearly orthogonal to the
// gradient (|analytic| >= 1e-2 |g| |step| / sqrt(n), a random direction's typical size being
// |g| |step| / sqrt(n)), so the relative test means something.
inline ::testing::AssertionResult directional_matches(const Directional& d, size_t n,
                                                      double rel_tol) {
  std::ostringstream s;
  s.precision(9);
  s << "directional derivative: finite difference " << d.fd << ", gradient " << d.analytic
    << " (relative error " << std::abs(d.fd - d.analytic) / std::abs(d.analytic) << ", tol "
    << rel_tol << "; |g| " << d.g_norm << ")";
  if (!(std::abs(d.analytic) >= 1e-2 * d.g_norm * d.step_norm / std::sqrt(double(n))))
    return ::testing::AssertionFailure() << s.str() << ": direction nearly orthogonal to g";
  if (!(std::abs(d.fd - d.analytic) <= rel_tol * std::abs(d.analytic)))
    return ::testing::AssertionFailure() << s.str();
  return ::testing::AssertionSuccess() << s.str();
}

}  // namespace sy::testing
