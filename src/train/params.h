// Trainable tensors, float32, named as in the Hugging Face checkpoint they load from and save
// to. Values and gradients live side by side; addresses are stable (layers keep pointers).
#pragma once

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "ops/weight.h"

namespace sy::train {

struct Param {
  std::string name;  // checkpoint tensor name, e.g. "model.layers.0.mlp.gate.weight"
  std::vector<int64_t> shape;
  std::vector<float> value, grad;
  bool trainable = true;  // false: buffers (dots1's e_score_correction_bias)
  bool expert = false;    // a routed expert's weight (owned by one rank under EP)

  int64_t numel() const;
  bool decays() const { return shape.size() >= 2; }  // AdamW decays matrices only
  // The value of a [rows, cols] parameter as a float32 weight view (the shared forward's input;
  // valid while the value is not reallocated).
  ops::WeightView view() const;
};

class ParamSet {
 public:
  // Adds a zero-filled tensor; fails if the name exists.
  Param& add(const std::string& name, std::vector<int64_t> shape);
  Param* find(const std::string& name);
  const Param* find(const std::string& name) const;
  Param& get(const std::string& name);  // sy::Error when missing
  const Param& get(const std::string& name) const;

  std::deque<Param>& all() { return params_; }
  const std::deque<Param>& all() const { return params_; }
  size_t size() const { return params_.size(); }
  int64_t numel() const;

  void zero_grads();

 private:
  std::deque<Param> params_;  // deque: references survive add()
};

// Every tensor of a checkpoint directory (any float dtype), converted to float32.
ParamSet load_params(const std::string& model_dir);

}  // namespace sy::train
