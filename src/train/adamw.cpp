#include "train/adamw.h"

#include <functional>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <set>

#include "io/safetensors.h"
#include "ops/elementwise.h"
#include "util/error.h"

namespace sy::train {
namespace {

// Tensors are cut into chunks of this many elements and the chunks of all tensors go to one
// parallel loop. The norm sums each chunk, then a tensor's chunk sums in order, then the
// tensors in order, so it does not depend on how OpenMP splits the work.
constexpr int64_t kChunk = 1 << 16;

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

struct Chunk {
  size_t tensor;  // index in the caller's list
  int64_t begin, end;
};

// The chunks of tensors of the given sizes, tensor by tensor.
std::vector<Chunk> chunks_of(const std::vector<int64_t>& sizes) {
  std::vector<Chunk> out;
  for (size_t t = 0; t < sizes.size(); ++t)
    for (int64_t b = 0; b < sizes[t]; b += kChunk)
      out.push_back({t, b, std::min(sizes[t], b + kChunk)});
  return out;
}

// torch's CPU kernels (AVX2 / AVX-512 builds of Vectorized, i.e. any current x86 machine) fuse
// two of the multiply-adds (vec::fmadd in add_(g, alpha) and in addcmul_); ops::adamw_update
// rounds as they do (IEEE fma, sqrt and division in SIMD lanes), which makes the update equal
// torch's bit for bit (tests/unit/adamw_test.cpp MatchesTorch).

}  // namespace

AdamW::AdamW(AdamWConfig config) : config_(config) {
  const AdamWConfig& c = config_;
  if (!(c.beta1 >= 0 && c.beta1 < 1)) fail("AdamW: beta1 {} is outside [0, 1)", c.beta1);
  if (!(c.beta2 >= 0 && c.beta2 < 1)) fail("AdamW: beta2 {} is outside [0, 1)", c.beta2);
  if (!(c.eps >= 0 && std::isfinite(c.eps))) fail("AdamW: eps {} must be finite and >= 0", c.eps);
  if (!(c.weight_decay >= 0 && std::isfinite(c.weight_decay)))
    fail("AdamW: weight decay {} must be finite and >= 0", c.weight_decay);
}

void AdamW::step(ParamSet& params, double lr) {
  if (!(lr >= 0 && std::isfinite(lr))) fail("AdamW: learning rate {} must be finite and >= 0", lr);
  const AdamWConfig& c = config_;
  const int64_t t = step_ + 1;
  // As torch's _single_tensor_adamw: Python-float (double) scalars, each cast to float32 by the
  // tensor op that uses it; the tensor arithmetic is float32 in the same order.
  const double bias_correction1 = 1 - std::pow(c.beta1, double(t));
  const double bias_correction2 = 1 - std::pow(c.beta2, double(t));
  const float neg_step_size = float(-(lr / bias_correction1));
  const float bc2_sqrt = float(std::sqrt(bias_correction2));
  const float b1 = float(c.beta1), one_minus_b1 = float(1 - c.beta1);
  const float b2 = float(c.beta2), one_minus_b2 = float(1 - c.beta2);
  const float eps = float(c.eps);
  const float decay = float(1 - lr * c.weight_decay);

  // Check every tensor first: a failed step changes nothing.
  for (const Param& p : params.all()) {
    if (!p.trainable) continue;
    SY_ASSERT(int64_t(p.value.size()) == p.numel() && int64_t(p.grad.size()) == p.numel());
    const auto it = state_.find(p.name);
    if (it != state_.end() && !it->second.exp_avg.empty() &&
        int64_t(it->second.exp_avg.size()) != p.numel())
      fail("AdamW: parameter '{}' {} has {} elements but its optimizer state has {}", p.name,
           shape_str(p.shape), p.numel(), it->second.exp_avg.size());
  }
  struct Tensor {
    ops::AdamWScalars k;
    float *theta, *m, *v;
    const float* g;
  };
  std::vector<Tensor> tensors;
  std::vector<int64_t> sizes;
  for (Param& p : params.all()) {
    if (!p.trainable) continue;
    const int64_t n = p.numel();
    Moments& s = state_[p.name];
    if (s.exp_avg.empty()) {
      s.exp_avg.assign(size_t(n), 0.0f);
      s.exp_avg_sq.assign(size_t(n), 0.0f);
    }
    const bool decays = p.decays() && c.weight_decay != 0;
    tensors.push_back(
        {{decays ? decay : 1.0f, b1, one_minus_b1, b2, one_minus_b2, bc2_sqrt, eps, neg_step_size},
         p.value.data(),
         s.exp_avg.data(),
         s.exp_avg_sq.data(),
         p.grad.data()});
    sizes.push_back(n);
  }
  const std::vector<Chunk> work = chunks_of(sizes);
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t i = 0; i < work.size(); ++i) {
    const Chunk& w = work[i];
    const Tensor& x = tensors[w.tensor];
    ops::adamw_update(x.k, 1.0f, x.theta + w.begin, x.g + w.begin, x.m + w.begin, x.v + w.begin,
                      w.end - w.begin);
  }
  step_ = t;
}

void AdamW::save(const std::string& path, const ParamSet& params) const {
  std::vector<io::TensorToWrite> tensors;
  std::vector<std::vector<float>> zeros;  // moments of params not stepped yet
  zeros.reserve(2 * params.size());
  for (const Param& p : params.all()) {
    if (!p.trainable) continue;
    const size_t n = size_t(p.numel());
    const auto it = state_.find(p.name);
    const std::vector<float>* m = nullptr;
    const std::vector<float>* v = nullptr;
    if (it != state_.end() && !it->second.exp_avg.empty()) {
      m = &it->second.exp_avg;
      v = &it->second.exp_avg_sq;
      SY_ASSERT(m->size() == n && v->size() == n);
    } else {
      m = v = &zeros.emplace_back(n, 0.0f);
    }
    tensors.push_back({p.name + ".exp_avg", "F32", p.shape, m->data(), n * 4});
    tensors.push_back({p.name + ".exp_avg_sq", "F32", p.shape, v->data(), n * 4});
  }
  const AdamWConfig& c = config_;
  write_safetensors(path, tensors,
                    {{"format", "pt"},
                     {"optimizer", "AdamW"},
                     {"step", std::to_string(step_)},
                     {"beta1", fmt::format("{}", c.beta1)},
                     {"beta2", fmt::format("{}", c.beta2)},
                     {"eps", fmt::format("{}", c.eps)},
                     {"weight_decay", fmt::format("{}", c.weight_decay)}});
}

void AdamW::load(const std::string& path, const ParamSet& params) {
  const io::SafetensorsFile file(path);
  const auto& meta = file.metadata();
  const auto kind = meta.find("optimizer");
  if (kind == meta.end() || kind->second != "AdamW")
    fail("'{}' is not an AdamW state file (its metadata lacks optimizer=AdamW)", path);
  int64_t step = -1;
  if (const auto s = meta.find("step"); s != meta.end()) {
    try {
      size_t used = 0;
      step = std::stoll(s->second, &used);
      if (used != s->second.size()) step = -1;
    } catch (const std::exception&) {
    }
  }
  if (step < 0) fail("'{}': the metadata's step is missing or not a count", path);

  std::map<std::string, const io::TensorInfo*> by_name;
  for (const auto& t : file.tensors()) by_name[t.name] = &t;
  std::map<std::string, Moments> state;
  std::set<std::string> used;
  for (const Param& p : params.all()) {
    if (!p.trainable) continue;
    Moments& s = state[p.name];
    for (const char* suffix : {".exp_avg", ".exp_avg_sq"}) {
      const std::string name = p.name + suffix;
      const auto it = by_name.find(name);
      if (it == by_name.end())
        fail("'{}' has no '{}': the optimizer state does not match the model (parameter '{}' {})",
             path, name, p.name, shape_str(p.shape));
      const io::TensorInfo& t = *it->second;
      if (t.dtype_name != "F32") fail("'{}': '{}' is {}, expected F32", path, name, t.dtype_name);
      if (t.shape != p.shape)
        fail("'{}': '{}' has shape {} but parameter '{}' has shape {}", path, name, t.shape_str(),
             p.name, shape_str(p.shape));
      std::vector<float>& dst = suffix == std::string(".exp_avg") ? s.exp_avg : s.exp_avg_sq;
      dst.resize(size_t(t.numel()));
      if (t.nbytes) std::memcpy(dst.data(), t.data, t.nbytes);
      used.insert(name);
    }
  }
  for (const auto& t : file.tensors())
    if (!used.count(t.name))
      fail("'{}' holds '{}', which belongs to no trainable parameter of the model", path, t.name);
  state_ = std::move(state);
  step_ = step;
}

void AdamW::restore(int64_t step, std::map<std::string, Moments> state) {
  SY_ASSERT(step >= 0);
  step_ = step;
  state_ = std::move(state);
}

namespace {

// The trainable gradients that pass `include`, as tensor pointers and sizes.
void select_grads(ParamSet& params, const std::function<bool(const Param&)>& include,
                  std::vector<float*>& grads, std::vector<int64_t>& sizes) {
  for (Param& p : params.all())
    if (p.trainable && (!include || include(p))) {
      grads.push_back(p.grad.data());
      sizes.push_back(int64_t(p.grad.size()));
    }
}

}  // namespace

double grad_sum_squares(ParamSet& params, const std::function<bool(const Param&)>& include) {
  std::vector<float*> grads;
  std::vector<int64_t> sizes;
  select_grads(params, include, grads, sizes);
  const std::vector<Chunk> work = chunks_of(sizes);
  std::vector<double> partial(work.size());
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t i = 0; i < work.size(); ++i)
    partial[i] =
        ops::sum_squares(grads[work[i].tensor] + work[i].begin, work[i].end - work[i].begin);
  double sum = 0;
  for (size_t i = 0; i < work.size();) {  // per tensor in order, then the tensors in order
    double tensor_sum = 0;
    const size_t t = work[i].tensor;
    for (; i < work.size() && work[i].tensor == t; ++i) tensor_sum += partial[i];
    sum += tensor_sum;
  }
  return sum;
}

void clip_grads_to_norm(ParamSet& params, double norm, double max_norm) {
  if (std::isnan(max_norm)) fail("clip_grad_norm: max_norm is NaN");
  if (max_norm <= 0) return;
  // torch: clip_coef = max_norm / (total_norm + 1e-6) on a float32 tensor, which Tensor.__rdiv__
  // evaluates as reciprocal() * max_norm; then clamp(max=1). A NaN / inf norm propagates into the
  // gradients as in torch; the caller sees it in the returned norm.
  const float coef = std::min((1.0f / (float(norm) + 1e-6f)) * float(max_norm), 1.0f);
  std::vector<float*> grads;
  std::vector<int64_t> sizes;
  select_grads(params, {}, grads, sizes);
  const std::vector<Chunk> work = chunks_of(sizes);
#pragma omp parallel for schedule(dynamic, 4)
  for (size_t i = 0; i < work.size(); ++i)
    ops::scale(coef, work[i].end - work[i].begin, grads[work[i].tensor] + work[i].begin);
}

double clip_grad_norm(ParamSet& params, double max_norm) {
  if (std::isnan(max_norm)) fail("clip_grad_norm: max_norm is NaN");
  const double norm = std::sqrt(grad_sum_squares(params));
  clip_grads_to_norm(params, norm, max_norm);
  return norm;
}

}  // namespace sy::train
