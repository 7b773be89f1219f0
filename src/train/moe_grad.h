// The MoE block in training. The forward is inference's moe::moe_forward (router -> top-k ->
// optional score-priority capacity drop -> grouped SwiGLU experts -> weighted combine +
// shared expert) on float32 views of the parameters, its scratch kept per layer as the record
// backward reads; this file adds the balancing losses and the backward pass, with the
// losses' gradients added at the router.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "moe/moe_layer.h"
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
  Param* combine_gate = nullptr;    // [2, H] or null: ScMoE CG-2, softmax(C x) weighs the branches
  Param* noise = nullptr;           // [E, H] or null: noisy top-k gating's W_noise (training only)
  bool has_shared() const { return shared.gate != nullptr; }
};

// Where the routed experts run. Rows come grouped by expert (rows offsets[e] .. offsets[e+1]
// of xe / ye); the forward (moe::GroupedExperts' steps, driven by moe_forward) keeps what
// backward of the same layer needs. The backward runs in the same three steps, so that a caller
// can compute other operators' backward while its exchanges are in flight (ScMoE):
// backward_start (the output gradients dye leave for the experts' owners), backward_compute
// (the experts' backward; weight gradients accumulate where the experts live), backward_finish
// (dxe holds the input gradients). dye and dxe stay alive until backward_finish.
class ExpertCompute : public moe::GroupedExperts {
 public:
  virtual void backward_start(const MoeParams& p, int layer, const float* dye, float* dxe) = 0;
  virtual void backward_progress(int layer) { (void)layer; }
  virtual void backward_compute(int layer) = 0;
  virtual void backward_finish(int layer) { (void)layer; }
  virtual moe::ExchangeEstimate backward_estimate(int layer) const {
    (void)layer;
    return {0, 0, true};
  }
  // All three steps.
  void backward(const MoeParams& p, int layer, const float* dye, float* dxe) {
    backward_start(p, layer, dye, dxe);
    backward_compute(layer);
    backward_finish(layer);
  }
};

// Every expert in this process.
class LocalExperts : public ExpertCompute {
 public:
  void start(const moe::MoeBlock& block, int layer, const std::vector<int64_t>& offsets,
             const float* xe, int64_t hidden, float* ye) override;
  void compute(int layer) override;
  void backward_start(const MoeParams& p, int layer, const float* dye, float* dxe) override;
  void backward_compute(int layer) override;

 private:
  struct Layer {
    const moe::MoeBlock* block = nullptr;
    const MoeParams* params = nullptr;
    std::vector<int64_t> offsets;  // the forward's rows per expert
    const float* xe = nullptr;     // the forward's input rows (owned by the layer's record)
    float* ye = nullptr;
    const float* dye = nullptr;
    float* dxe = nullptr;
    int64_t hidden = 0;
    std::vector<FfnActivations> act;  // [E]
  };
  std::vector<Layer> layers_;
  std::vector<FfnActivations> scratch_;  // [E]: experts run concurrently
};

// Statistics over the whole batch when it is split over data-parallel ranks: the balancing
// losses use the global expert counts and token count, so every rank's gradient is its share
// of the single-process gradient.
struct GlobalBatch {
  int64_t tokens = 0;                                     // B * S over all ranks
  std::function<void(std::vector<int64_t>&)> sum_counts;  // all-reduce of [E] counts
};

// Buffers of moe_train_backward, kept between calls so the step does not allocate and zero
// them each time (contents are scratch).
struct MoeBackwardScratch {
  std::vector<float> dye, dxe, dweights, dlogits, d_routed;
};

struct MoeTrainOptions {
  double capacity_factor = 0;  // > 0: C = ceil(g T k / E), keep the C highest-p pairs
  float aux_scale = 0;         // coefficient on this layer's aux loss in the total
  float z_scale = 0;           // coefficient on this layer's z loss in the total
  int layer = 0;
  ExpertCompute* experts = nullptr;  // required
  // Noisy top-k gating (when MoeParams::noise is set): the selection uses
  // H = logits + eps * softplus(x W_noise^T), eps drawn from (noise_seed, stream
  // noise_step * noise_layers + layer); noise_step < 0 (validation) routes on the clean logits.
  uint64_t noise_seed = 0;
  int64_t noise_step = -1;
  int64_t noise_layers = 1;
  const GlobalBatch* global = nullptr;    // null: this process holds the whole batch
  MoeBackwardScratch* scratch = nullptr;  // null: temporary buffers
};

// Float32 views of a MoE layer's parameters as moe_forward's block. Rebuilt every step: the
// views follow the parameters' storage.
struct MoeViews {
  std::vector<moe::FfnWeights> experts;  // [E]
  moe::FfnWeights shared;
  moe::MoeBlock block;
};
void bind_views(const MoeParams& p, MoeViews& views);

// The settings moe_forward runs a training step's MoE layers with: score-priority capacity on
// one device, the expert compute, noisy gating.
moe::MoeRuntime train_runtime(const MoeTrainOptions& opt);

// One layer's routing statistics and balancing losses, from what its forward recorded.
struct MoeActivations {
  double aux = 0, z = 0;              // this rank's share (sums to the global value)
  std::vector<int64_t> counts, kept;  // [E] pairs routed / kept (counts: global batch)
  int64_t dropped = 0, capacity = 0;
};
void moe_statistics(const MoeParams& p, const MoeTrainOptions& opt, int64_t num_tokens,
                    const moe::MoeScratch& fwd, MoeActivations& act);

// One MoE block alone (tests): moe_forward on the views, recording into `fwd`, then
// moe_statistics. x [T, H] -> out [T, H] (overwritten).
void moe_train_forward(const MoeParams& p, const MoeTrainOptions& opt, const float* x,
                       int64_t num_tokens, moe::MoeScratch& fwd, MoeActivations& act, float* out);

// The backward of one MoE block in steps, for callers that run other operators' backward while
// the routed branch's exchanges are in flight (model order reversed; train_model.cpp):
//   routed_backward_start   the combine's backward (d_out [T, H], times CG-2's beta); the
//                           experts' output gradients leave for their owners
//   opt.experts->backward_compute(layer)   the experts' backward
//   routed_backward_finish  their input gradients home -> dxr [T, H] (overwritten), plus the
//                           router's and the balancing losses' backward
//   shared_backward         the shared expert's and the gates' backward, added to dx [T, H]
// fwd / act: what the forward of this layer recorded; ws: this call's buffers, alive from start
// to finish (one per call in flight). xr is the routed branch's input and x the shared
// expert's and the gates' (the same array unless an ScMoE shortcut feeds the routed branch).
void routed_backward_start(const MoeParams& p, const MoeTrainOptions& opt, int64_t num_tokens,
                           const moe::MoeScratch& fwd, const float* d_out, MoeBackwardScratch& ws);
void routed_backward_finish(const MoeParams& p, const MoeTrainOptions& opt, const float* xr,
                            int64_t num_tokens, const moe::MoeScratch& fwd,
                            const MoeActivations& act, MoeBackwardScratch& ws, float* dxr);
void shared_backward(const MoeParams& p, const float* x, int64_t num_tokens,
                     const moe::MoeScratch& fwd, const float* d_out, float* dx);

// All of it at once: d_out [T, H] -> dxr and dx (overwritten; summed into one array when
// dxr == dx); parameter gradients accumulate.
void moe_train_backward(const MoeParams& p, const MoeTrainOptions& opt, const float* xr,
                        const float* x, int64_t num_tokens, const moe::MoeScratch& fwd,
                        const MoeActivations& act, const float* d_out, float* dxr, float* dx);
inline void moe_train_backward(const MoeParams& p, const MoeTrainOptions& opt, const float* x,
                               int64_t num_tokens, const moe::MoeScratch& fwd,
                               const MoeActivations& act, const float* d_out, float* dx) {
  moe_train_backward(p, opt, x, x, num_tokens, fwd, act, d_out, dx, dx);
}

}  // namespace sy::train
