// Highway (runtime-dispatched) row kernels: rmsnorm (and its backward), softmax, swiglu, add,
// axpy, rope_neox; the AdamW update and sum of squares of the trainer.
// Loops run full vectors then a scalar tail, so any n works without padding.
#include <cmath>

#include "ops/elementwise.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/elementwise.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
// (foreach_target.h first: it re-includes this file once per SIMD target)

#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace sy::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

// Sum of x^2 in double (two accumulators of promoted halves).
double SumSquares(const float* x, int64_t n) {
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> dfh;
  const size_t N = hn::Lanes(dd);
  auto acc0 = hn::Zero(dd), acc1 = hn::Zero(dd);
  int64_t i = 0;
  for (; i + int64_t(2 * N) <= n; i += int64_t(2 * N)) {
    const auto a = hn::PromoteTo(dd, hn::LoadU(dfh, x + i));
    const auto b = hn::PromoteTo(dd, hn::LoadU(dfh, x + i + N));
    acc0 = hn::MulAdd(a, a, acc0);
    acc1 = hn::MulAdd(b, b, acc1);
  }
  double ss = hn::GetLane(hn::SumOfLanes(dd, hn::Add(acc0, acc1)));
  for (; i < n; ++i) ss += double(x[i]) * double(x[i]);
  return ss;
}

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* y) {
  // Sum of squares in double: hidden sizes reach 8k and activations can be large.
  const double ss = SumSquares(x, n);
  const float scale = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto vs = hn::Set(df, scale);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L))
    hn::StoreU(hn::Mul(hn::Mul(hn::LoadU(df, x + i), vs), hn::LoadU(df, weight + i)), df, y + i);
  for (; i < n; ++i) y[i] = x[i] * scale * weight[i];
}

void Softmax(float* x, int64_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  float mx = -INFINITY;
  int64_t i = 0;
  if (n >= int64_t(L)) {
    auto vmax = hn::LoadU(df, x);
    for (i = int64_t(L); i + int64_t(L) <= n; i += int64_t(L))
      vmax = hn::Max(vmax, hn::LoadU(df, x + i));
    mx = hn::GetLane(hn::MaxOfLanes(df, vmax));
  }
  for (; i < n; ++i) mx = std::max(mx, x[i]);
  if (mx == -INFINITY) mx = 0.0f;  // all -inf: leave the exps at zero instead of NaN
  const auto vmx = hn::Set(df, mx);
  auto vsum = hn::Zero(df);
  i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L)) {
    const auto e = hn::Exp(df, hn::Sub(hn::LoadU(df, x + i), vmx));
    hn::StoreU(e, df, x + i);
    vsum = hn::Add(vsum, e);
  }
  double sum = hn::GetLane(hn::SumOfLanes(df, vsum));
  for (; i < n; ++i) {
    x[i] = std::exp(x[i] - mx);
    sum += x[i];
  }
  const float inv = float(1.0 / sum);
  const auto vinv = hn::Set(df, inv);
  i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L))
    hn::StoreU(hn::Mul(hn::LoadU(df, x + i), vinv), df, x + i);
  for (; i < n; ++i) x[i] *= inv;
}

void Swiglu(const float* gate, const float* up, int64_t n, float* out) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto one = hn::Set(df, 1.0f);
  const auto cap = hn::Set(df, 80.0f);  // exp(-g) for g < -80 would overflow; silu ~ -0 there
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L)) {
    const auto g = hn::LoadU(df, gate + i);
    const auto e = hn::Exp(df, hn::Min(hn::Neg(g), cap));
    hn::StoreU(hn::Mul(hn::Div(g, hn::Add(one, e)), hn::LoadU(df, up + i)), df, out + i);
  }
  for (; i < n; ++i) out[i] = gate[i] / (1.0f + std::exp(std::min(-gate[i], 80.0f))) * up[i];
}

void SwigluBackward(const float* dh, const float* gate, const float* up, int64_t n, float* dg,
                    float* du) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto one = hn::Set(df, 1.0f);
  const auto cap = hn::Set(df, 80.0f);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L)) {
    const auto g = hn::LoadU(df, gate + i);
    const auto d = hn::LoadU(df, dh + i);
    const auto sig = hn::Div(one, hn::Add(one, hn::Exp(df, hn::Min(hn::Neg(g), cap))));
    const auto silu = hn::Mul(g, sig);
    hn::StoreU(hn::Mul(d, silu), df, du + i);
    // d silu / dg = sig * (1 + g * (1 - sig))
    const auto dsilu = hn::Mul(sig, hn::MulAdd(g, hn::Sub(one, sig), one));
    hn::StoreU(hn::Mul(hn::Mul(d, hn::LoadU(df, up + i)), dsilu), df, dg + i);
  }
  for (; i < n; ++i) {
    const float sig = 1.0f / (1.0f + std::exp(std::min(-gate[i], 80.0f)));
    du[i] = dh[i] * gate[i] * sig;
    dg[i] = dh[i] * up[i] * sig * (1.0f + gate[i] * (1.0f - sig));
  }
}

float Dot(const float* a, const float* b, int64_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  auto acc = hn::Zero(df);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L))
    acc = hn::MulAdd(hn::LoadU(df, a + i), hn::LoadU(df, b + i), acc);
  float s = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

void Add(const float* x, int64_t n, float* y) {
  const DF df;
  const size_t L = hn::Lanes(df);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L))
    hn::StoreU(hn::Add(hn::LoadU(df, y + i), hn::LoadU(df, x + i)), df, y + i);
  for (; i < n; ++i) y[i] += x[i];
}

void Axpy(float a, const float* x, int64_t n, float* y) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto va = hn::Set(df, a);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L))
    hn::StoreU(hn::MulAdd(va, hn::LoadU(df, x + i), hn::LoadU(df, y + i)), df, y + i);
  for (; i < n; ++i) y[i] += a * x[i];
}

void RmsNormBackward(const float* dy, const float* x, const float* w, float rstd, int64_t n,
                     float* dx, float* dw, bool accumulate_dx) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto vs = hn::Set(df, rstd);
  auto acc = hn::Zero(df);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L)) {
    const auto d = hn::LoadU(df, dy + i);
    const auto xhat = hn::Mul(hn::LoadU(df, x + i), vs);
    hn::StoreU(hn::MulAdd(d, xhat, hn::LoadU(df, dw + i)), df, dw + i);
    acc = hn::MulAdd(hn::Mul(d, hn::LoadU(df, w + i)), xhat, acc);
  }
  double dot = hn::GetLane(hn::SumOfLanes(df, acc));
  for (; i < n; ++i) {
    const float xhat = x[i] * rstd;
    dw[i] += dy[i] * xhat;
    dot += double(dy[i] * w[i]) * xhat;
  }
  const float mean = float(dot / double(n));
  const auto vmean = hn::Set(df, mean);
  i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L)) {
    const auto xhat = hn::Mul(hn::LoadU(df, x + i), vs);
    auto g = hn::Mul(
        vs, hn::NegMulAdd(xhat, vmean, hn::Mul(hn::LoadU(df, dy + i), hn::LoadU(df, w + i))));
    if (accumulate_dx) g = hn::Add(hn::LoadU(df, dx + i), g);
    hn::StoreU(g, df, dx + i);
  }
  for (; i < n; ++i) {
    const float g = rstd * (dy[i] * w[i] - x[i] * rstd * mean);
    dx[i] = accumulate_dx ? dx[i] + g : g;
  }
}

// torch rounds theta * decay before adding the step: GCC must not contract the two into one
// fused multiply-add (it does for vector types under its default -ffp-contract=fast).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC push_options
#pragma GCC optimize("fp-contract=off")
#endif
void AdamWUpdate(const AdamWScalars& k, float grad_scale, float* theta, const float* grad, float* m,
                 float* v, int64_t n) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto decay = hn::Set(df, k.decay), b1 = hn::Set(df, k.b1),
             omb1 = hn::Set(df, k.one_minus_b1);
  const auto b2 = hn::Set(df, k.b2), omb2 = hn::Set(df, k.one_minus_b2);
  const auto bc2 = hn::Set(df, k.bc2_sqrt), eps = hn::Set(df, k.eps),
             nss = hn::Set(df, k.neg_step_size);
  const auto gs = hn::Set(df, grad_scale);
  const bool scaled = grad_scale != 1.0f;
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L)) {
    auto g = hn::LoadU(df, grad + i);
    if (scaled) g = hn::Mul(g, gs);
    const auto th = hn::Mul(hn::LoadU(df, theta + i), decay);
    const auto mi = hn::MulAdd(g, omb1, hn::Mul(hn::LoadU(df, m + i), b1));
    const auto vi = hn::MulAdd(hn::Mul(omb2, g), g, hn::Mul(hn::LoadU(df, v + i), b2));
    const auto denom = hn::Add(hn::Div(hn::Sqrt(vi), bc2), eps);
    hn::StoreU(hn::Add(th, hn::Div(hn::Mul(nss, mi), denom)), df, theta + i);
    hn::StoreU(mi, df, m + i);
    hn::StoreU(vi, df, v + i);
  }
  for (; i < n; ++i) {
    const float g = scaled ? grad[i] * grad_scale : grad[i];
    const float th = theta[i] * k.decay;
    const float mi = std::fma(g, k.one_minus_b1, m[i] * k.b1);
    const float vi = std::fma(k.one_minus_b2 * g, g, v[i] * k.b2);
    const float denom = std::sqrt(vi) / k.bc2_sqrt + k.eps;
    theta[i] = th + k.neg_step_size * mi / denom;
    m[i] = mi;
    v[i] = vi;
  }
}

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC pop_options
#endif

void Scale(float a, int64_t n, float* y) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto va = hn::Set(df, a);
  int64_t i = 0;
  for (; i + int64_t(L) <= n; i += int64_t(L))
    hn::StoreU(hn::Mul(hn::LoadU(df, y + i), va), df, y + i);
  for (; i < n; ++i) y[i] *= a;
}

void RopeNeox(float* head, int64_t rot_dim, const float* cos, const float* sin) {
  const DF df;
  const size_t L = hn::Lanes(df);
  const int64_t h = rot_dim / 2;
  float* lo = head;
  float* hi = head + h;
  int64_t i = 0;
  for (; i + int64_t(L) <= h; i += int64_t(L)) {
    const auto a = hn::LoadU(df, lo + i), b = hn::LoadU(df, hi + i);
    const auto c = hn::LoadU(df, cos + i), s = hn::LoadU(df, sin + i);
    hn::StoreU(hn::NegMulAdd(b, s, hn::Mul(a, c)), df, lo + i);  // a c - b s
    hn::StoreU(hn::MulAdd(a, s, hn::Mul(b, c)), df, hi + i);     // b c + a s
  }
  for (; i < h; ++i) {
    const float a = lo[i], b = hi[i];
    lo[i] = a * cos[i] - b * sin[i];
    hi[i] = b * cos[i] + a * sin[i];
  }
}

}  // namespace sy::ops::HWY_NAMESPACE
HWY_AFTER_NAMESPACE();

#if HWY_ONCE
namespace sy::ops {
HWY_EXPORT(RmsNorm);
HWY_EXPORT(Softmax);
HWY_EXPORT(Swiglu);
HWY_EXPORT(SwigluBackward);
HWY_EXPORT(Dot);
HWY_EXPORT(Add);
HWY_EXPORT(Axpy);
HWY_EXPORT(RopeNeox);
HWY_EXPORT(RmsNormBackward);
HWY_EXPORT(AdamWUpdate);
HWY_EXPORT(SumSquares);
HWY_EXPORT(Scale);

void rmsnorm(const float* x, const float* weight, int64_t n, float eps, float* y) {
  SY_ASSERT(n > 0);
  HWY_DYNAMIC_DISPATCH(RmsNorm)(x, weight, n, eps, y);
}
void softmax(float* x, int64_t n) {
  SY_ASSERT(n >= 0);
  HWY_DYNAMIC_DISPATCH(Softmax)(x, n);
}
void swiglu(const float* gate, const float* up, int64_t n, float* out) {
  HWY_DYNAMIC_DISPATCH(Swiglu)(gate, up, n, out);
}
void swiglu_backward(const float* dh, const float* gate, const float* up, int64_t n, float* dgate,
                     float* dup) {
  HWY_DYNAMIC_DISPATCH(SwigluBackward)(dh, gate, up, n, dgate, dup);
}
float dot(const float* a, const float* b, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n);
}
void add(const float* x, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(Add)(x, n, y);
}
void axpy(float a, const float* x, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(Axpy)(a, x, n, y);
}
void rope_neox(float* head, int64_t rot_dim, const float* cos, const float* sin) {
  SY_ASSERT(rot_dim % 2 == 0);
  HWY_DYNAMIC_DISPATCH(RopeNeox)(head, rot_dim, cos, sin);
}
void rmsnorm_backward(const float* dy, const float* x, const float* w, float rstd, int64_t n,
                      float* dx, float* dw, bool accumulate_dx) {
  HWY_DYNAMIC_DISPATCH(RmsNormBackward)(dy, x, w, rstd, n, dx, dw, accumulate_dx);
}
void adamw_update(const AdamWScalars& k, float grad_scale, float* theta, const float* grad,
                  float* m, float* v, int64_t n) {
  HWY_DYNAMIC_DISPATCH(AdamWUpdate)(k, grad_scale, theta, grad, m, v, n);
}
double sum_squares(const float* x, int64_t n) {
  return HWY_DYNAMIC_DISPATCH(SumSquares)(x, n);
}
void scale(float a, int64_t n, float* y) {
  HWY_DYNAMIC_DISPATCH(Scale)(a, n, y);
}
}  // namespace sy::ops
#endif
