// The backward of a SwiGLU feed-forward network (dense MLP, routed expert or shared expert),
// y = down(silu(gate x) * up x). The forward is inference's moe::ffn_forward on float32 views
// of the parameters (weight_views) with FfnScratch::keep, which keeps gate, up and act.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/expert_ffn.h"
#include "train/params.h"

namespace sy::train {

struct FfnParams {
  Param* gate = nullptr;  // [I, H]
  Param* up = nullptr;    // [I, H]
  Param* down = nullptr;  // [H, I]
  int64_t hidden() const { return gate->shape[1]; }
  int64_t intermediate() const { return gate->shape[0]; }
};

// What the forward keeps for backward: gate, up and act = silu(gate) * up, [rows, I] each.
using FfnActivations = moe::FfnScratch;

// The parameters as float32 weight views, for the shared forward.
moe::FfnWeights weight_views(const FfnParams& w);

// dy [rows, H] -> dx [rows, H] (overwritten, or added when accumulate_dx); weight grads +=.
// `scratch` is reused for dh / dg / du.
void ffn_train_backward(const FfnParams& w, const float* x, int64_t rows, const FfnActivations& act,
                        const float* dy, float* dx, bool accumulate_dx, FfnActivations& scratch);

}  // namespace sy::train
