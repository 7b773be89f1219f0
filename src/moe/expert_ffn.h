// One SwiGLU feed-forward network (an expert, a shared expert, or a dense MLP) applied to
// a contiguous block of token rows: out = down(silu(gate x) * up x), or GPT-OSS's variant with
// biases and clamps: g = min(gate x + bg, L), u = clamp(up x + bu, -L, L),
// out = down((u + 1) * g * sigmoid(alpha g)) + bd.
#pragma once

#include <cstdint>
#include <vector>

#include "ops/weight.h"

namespace sy::moe {

struct FfnWeights {
  ops::WeightView gate;  // [I, H]
  ops::WeightView up;    // [I, H]
  ops::WeightView down;  // [H, I]
  // W4A4 emulation (ReaLB's NVFP4, moe/low_precision_experts.h): the inputs of the three
  // products are rounded onto the NVFP4 grid first (util/nvfp4.h).
  bool nvfp4_activations = false;
  // GPT-OSS: biases ([I], [I], [H]; null when absent) and the clamped SwiGLU (limit > 0).
  const float *gate_bias = nullptr, *up_bias = nullptr, *down_bias = nullptr;
  float clamp_limit = 0.0f, glu_alpha = 1.0f;
  size_t bytes() const { return gate.bytes() + up.bytes() + down.bytes(); }
  int64_t hidden() const { return gate.cols; }
  int64_t intermediate() const { return gate.rows; }
};

// Reusable buffers so the hot path does not allocate. With `keep` (training records the
// forward for its backward pass) gate and up survive as computed and the SwiGLU product goes
// to `act`; without it the product overwrites gate.
struct FfnScratch {
  std::vector<float> gate, up;  // [rows, I] x gate^T, x up^T
  std::vector<float> act;       // [rows, I] silu(gate) * up (only with keep)
  std::vector<float> rounded;   // [rows, max(H, I)] NVFP4-rounded inputs (W4A4 emulation)
  bool keep = false;
};

// x: [rows, H] -> out: [rows, H] (overwritten). Inference and training both run it.
void ffn_forward(const FfnWeights& w, const float* x, int64_t rows, float* out,
                 FfnScratch& scratch);

}  // namespace sy::moe
