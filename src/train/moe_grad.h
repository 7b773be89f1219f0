// The MoE block in training: router -> top-k -> optional capacity drop (score priority) ->
// grouped SwiGLU experts -> weighted combine (+ shared expert), forward and backward, with
// the balancing losses' gradients added at the router.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/router.h"
#include "train/ffn_grad.h"
#include "train/params.h"

namespace sy::train {

struct MoeParams {
  const moe::RouterConfig* router = nullptr;
  Param* gate = nullptr;            // [E, H] router
  Param* selection_bias = nullptr;  // [E] or null (aux-loss-free balancing; no gradient)
  std::vector<FfnParams> experts;   // [E]
  FfnParams shared;                 // shared.gate == null: none
  Param* shared_gate = nullptr;     // [1, H] or null: out += sigmoid(g . x) * shared(x)
  bool has_shared() const { return shared.gate != nullptr; }
};

struct MoeTrainOptions {
  double capacity_factor = 0;  // > 0: C = ceil(g T k / E), keep the C highest-p pairs
  float aux_scale = 0;         // coefficient on this layer's aux loss in the total
  float z_scale = 0;           // coefficient on this layer's z loss in the total
};

// What one layer's forward saved, and its routing statistics.
struct MoeActivations {
  std::vector<float> logits;           // [T, E]
  std::vector<int32_t> router_ids;     // [T, k] the router's choice
  std::vector<int32_t> ids;            // [T, k] after the capacity drop (-1 = dropped)
  std::vector<float> weights;          // [T, k] combine weights (0 when dropped)
  std::vector<int64_t> offsets;        // [E + 1] rows of each expert in the grouped buffers
  std::vector<int32_t> row_token;      // [R] token of each grouped row
  std::vector<int32_t> row_slot;       // [R] its slot j in ids[t, j]
  std::vector<float> xe, ye;           // [R, H] gathered inputs and expert outputs
  std::vector<FfnActivations> expert_act;  // [E]
  FfnActivations shared_act;
  std::vector<float> shared_y;         // [T, H]
  std::vector<float> shared_gate;      // [T] sigmoid(g . x)
  double aux = 0, z = 0;
  std::vector<int64_t> counts, kept;   // [E] pairs routed / kept
  int64_t dropped = 0, capacity = 0;
};

// x [T, H] -> out [T, H] (overwritten).
void moe_train_forward(const MoeParams& p, const MoeTrainOptions& opt, const float* x,
                       int64_t num_tokens, MoeActivations& act, float* out);

// d_out [T, H] -> dx [T, H] (overwritten); parameter gradients accumulate.
void moe_train_backward(const MoeParams& p, const MoeTrainOptions& opt, const float* x,
                        int64_t num_tokens, const MoeActivations& act, const float* d_out,
                        float* dx);

}  // namespace sy::train
