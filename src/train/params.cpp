#include "train/params.h"

#include <algorithm>

#include "io/safetensors.h"
#include "util/dtype.h"
#include "util/error.h"
#include "util/memory.h"

namespace sy::train {

ops::WeightView Param::view() const {
  SY_ASSERT_MSG(shape.size() == 2, "a weight view needs a [rows, cols] parameter");
  return ops::WeightView{DType::F32, shape[0], shape[1], value.data()};
}

int64_t Param::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

Param& ParamSet::add(const std::string& name, std::vector<int64_t> shape) {
  if (find(name)) fail("parameter '{}' added twice", name);
  Param& p = params_.emplace_back();
  p.name = name;
  p.shape = std::move(shape);
  p.value.assign(size_t(p.numel()), 0.0f);
  p.grad.assign(size_t(p.numel()), 0.0f);
  return p;
}

Param* ParamSet::find(const std::string& name) {
  for (Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

const Param* ParamSet::find(const std::string& name) const {
  for (const Param& p : params_)
    if (p.name == name) return &p;
  return nullptr;
}

Param& ParamSet::get(const std::string& name) {
  Param* p = find(name);
  if (!p) fail("missing parameter '{}'", name);
  return *p;
}

const Param& ParamSet::get(const std::string& name) const {
  const Param* p = find(name);
  if (!p) fail("missing parameter '{}'", name);
  return *p;
}

int64_t ParamSet::numel() const {
  int64_t n = 0;
  for (const Param& p : params_) n += p.numel();
  return n;
}

void ParamSet::zero_grads() {
  for (Param& p : params_) std::fill(p.grad.begin(), p.grad.end(), 0.0f);
}

ParamSet load_params(const std::string& model_dir) {
  const io::TensorStore store = io::TensorStore::open(model_dir);
  // Training holds each parameter in float32 four times: value, gradient, AdamW's two moments.
  uint64_t numel = 0;
  for (const auto& [name, info] : store.all()) numel += uint64_t(info->numel());
  require_memory(numel * 16, fmt::format("training '{}' ({} parameters: float32 values, "
                                         "gradients and AdamW moments)",
                                         model_dir, numel));
  ParamSet set;
  for (const auto& [name, info] : store.all()) {
    if (!info->dtype)
      fail("tensor '{}' in '{}' has dtype {}; training needs F32, F16 or BF16 tensors", name,
           info->file, info->dtype_name);
    Param& p = set.add(name, info->shape);
    to_f32(*info->dtype, info->data, p.value.data(), p.value.size());
  }
  return set;
}

}  // namespace sy::train
