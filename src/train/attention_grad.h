// Backward of causal self-attention over B sequences of S tokens (model::batched_causal_attention,
// whose saved probabilities it reads).
#pragma once

#include <cstdint>

#include "model/attention.h"

namespace sy::train {

using model::AttentionDims;

// d_out [T, qw] -> dq [T, qw], dk / dv [T, kvw] (all overwritten).
void attention_backward(const AttentionDims& d, const float* q, const float* k, const float* v,
                        const float* probs, const float* d_out, float* dq, float* dk, float* dv);

}  // namespace sy::train
