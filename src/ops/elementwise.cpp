// Highway (runtime-dispatched) row kernels: rmsnorm, softmax, swiglu, add, axpy, rope_neox.
// Loops run full vectors then a scalar tail, so any n works without padding.
#include <cmath>

#include "ops/elementwise.h"
#include "util/error.h"

#undef HWY_TARGET_INCLUDE
#define HWY_TARGET_INCLUDE "ops/elementwise.cpp"
#include <hwy/foreach_target.h>  // IWYU pragma: keep
#include <hwy/contrib/math/math-inl.h>
#include <hwy/highway.h>

HWY_BEFORE_NAMESPACE();
namespace sy::ops::HWY_NAMESPACE {
namespace hn = hwy::HWY_NAMESPACE;
using DF = hn::ScalableTag<float>;

void RmsNorm(const float* x, const float* weight, int64_t n, float eps, float* y) {
  // Sum of squares in double: hidden sizes reach 8k and activations can be large.
  const hn::ScalableTag<double> dd;
  const hn::Rebind<float, decltype(dd)> dfh;  // half a float vector, promoted to doubles
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
  const float scale = float(1.0 / std::sqrt(ss / double(n) + double(eps)));
  const DF df;
  const size_t L = hn::Lanes(df);
  const auto vs = hn::Set(df, scale);
  i = 0;
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
    for (i = int64_t(L); i + int64_t(L) <= n; i += int64_t(L)) vmax = hn::Max(vmax, hn::LoadU(df, x + i));
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
  for (; i + int64_t(L) <= n; i += int64_t(L)) hn::StoreU(hn::Mul(hn::LoadU(df, x + i), vinv), df, x + i);
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
float dot(const float* a, const float* b, int64_t n) { return HWY_DYNAMIC_DISPATCH(Dot)(a, b, n); }
void add(const float* x, int64_t n, float* y) { HWY_DYNAMIC_DISPATCH(Add)(x, n, y); }
void axpy(float a, const float* x, int64_t n, float* y) { HWY_DYNAMIC_DISPATCH(Axpy)(a, x, n, y); }
void rope_neox(float* head, int64_t rot_dim, const float* cos, const float* sin) {
  SY_ASSERT(rot_dim % 2 == 0);
  HWY_DYNAMIC_DISPATCH(RopeNeox)(head, rot_dim, cos, sin);
}
}  // namespace sy::ops
#endif
