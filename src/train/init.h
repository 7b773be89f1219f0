// A fresh model to train: the checkpoint layout of a family (written by synth/, so names and
// config.json are exactly what inference loads) with training initial values.
#pragma once

#include <cstdint>
#include <string>

#include "synth/synthetic_checkpoint.h"
#include "train/params.h"

namespace sy::train {

struct FreshModel {
  std::string config_json;  // config.json text (eos / bos set to eos_id)
  ParamSet params;
};

// GPT-2 style initial values: matrices N(0, 0.02), the residual-output projections (o_proj,
// the FFN down projections) N(0, 0.02 / sqrt(2 * layers)), norm weights 1, biases 0, the
// aux-loss-free selection bias 0. Deterministic in `seed`. `spec.vocab_size` must be set.
FreshModel fresh_model(const synth::SyntheticSpec& spec, int32_t eos_id, uint64_t seed);

}  // namespace sy::train
