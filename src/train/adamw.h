// AdamW exactly as torch.optim.AdamW (amsgrad off), and global gradient-norm clipping as
// torch.nn.utils.clip_grad_norm_, over a ParamSet's float32 tensors. Weight decay applies to
// matrices only (Param::decays(): ndim >= 2); buffers (trainable == false) are never touched.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "train/params.h"

namespace sy::train {

struct AdamWConfig {
  double lr = 1e-3;  // used by step(params); the trainer passes the schedule's lr per step
  double beta1 = 0.9;
  double beta2 = 0.95;
  double eps = 1e-8;
  double weight_decay = 0.1;
};

class AdamW {
 public:
  // Moments of one parameter, [numel] each, zero before its first step.
  struct Moments {
    std::vector<float> exp_avg, exp_avg_sq;  // m, v
  };

  explicit AdamW(AdamWConfig config = {});  // sy::Error on betas outside [0, 1), eps < 0, ...

  // One update t = step_count() + 1 of every trainable Param from its grad at learning rate `lr`:
  //   theta *= 1 - lr*wd (decaying params only); m = b1*m + (1-b1)*g; v = b2*v + (1-b2)*g^2;
  //   theta -= (lr / (1 - b1^t)) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)
  // in float32 with torch's order of operations (bias corrections in double).
  void step(ParamSet& params, double lr);
  void step(ParamSet& params) { step(params, config_.lr); }

  int64_t step_count() const { return step_; }
  const AdamWConfig& config() const { return config_; }
  const std::map<std::string, Moments>& state() const { return state_; }  // by Param name

  // optimizer.safetensors: "<name>.exp_avg" and "<name>.exp_avg_sq" (F32, the param's shape) per
  // trainable param, the step count and hyperparameters in the metadata. Atomic (temp + rename).
  void save(const std::string& path, const ParamSet& params) const;
  // Replaces the state by the file's. Every trainable param of `params` needs both moments with
  // its shape (unless the file's step is 0) and the file may hold nothing else; sy::Error names
  // the mismatch and leaves this optimizer unchanged. The hyperparameters stay this object's.
  void load(const std::string& path, const ParamSet& params);
  // Replaces the step count and state (moments by Param name, checked by the caller).
  void restore(int64_t step, std::map<std::string, Moments> state);
  void set_moments(const std::string& name, Moments m) { state_[name] = std::move(m); }

 private:
  AdamWConfig config_;
  int64_t step_ = 0;
  std::map<std::string, Moments> state_;
};

// The global 2-norm of the trainable params' gradients (accumulated in double, tensor by tensor
// in ParamSet order, so the result does not depend on the thread count). If max_norm > 0, every
// gradient is multiplied by min(1, max_norm / (norm + 1e-6)) computed in float32 as torch does.
// Returns the norm before clipping.
double clip_grad_norm(ParamSet& params, double max_norm);

// The two halves of clip_grad_norm, for norms summed over several processes:
// the sum of squares of the trainable gradients that pass `include` (all when empty), in the
// same fixed order; and the scaling of every trainable gradient for a given global norm.
double grad_sum_squares(ParamSet& params, const std::function<bool(const Param&)>& include = {});
void clip_grads_to_norm(ParamSet& params, double norm, double max_norm);

}  // namespace sy::train
