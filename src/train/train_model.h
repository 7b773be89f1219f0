// A causal MoE language model as a function of its ParamSet. The forward is inference's own
// (model::embed_tokens, model::run_layers with per-layer records, model::lm_head) on float32
// views of the parameters; this class adds the loss -- cross-entropy plus the router balancing
// losses (see train_reference.py's docstring) -- and the backward pass written out layer by
// layer (llm.c style) over the records.
#pragma once

#include <cstdint>
#include <functional>
#include <vector>

#include "model/config.h"
#include "model/layers.h"
#include "train/attention_grad.h"
#include "train/ffn_grad.h"
#include "train/moe_grad.h"
#include "train/params.h"
#include "util/phase_times.h"

namespace sy::train {

struct LossOptions {
  double capacity_factor = 0;  // > 0: score-priority token drop in every MoE layer
  float aux_coef = 0.01f;      // load-balancing loss coefficient (on the mean over MoE layers)
  float z_coef = 0.001f;       // router z-loss coefficient (on the mean over MoE layers)
  // Noisy top-k gating in layers with a "gate.noise.weight": the training step's index, so
  // every step and layer draws new noise (< 0: no noise, e.g. validation).
  int64_t noise_step = -1;
  uint64_t noise_seed = 0;
};

struct LossParts {
  double total = 0, ce = 0, aux = 0, z = 0;  // ce: mean over the predicted positions
  int64_t predicted = 0;                     // positions with a target
};

struct LayerParams {
  Param *attn_norm = nullptr, *ffn_norm = nullptr;
  Param *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr;
  Param *q_bias = nullptr, *k_bias = nullptr, *v_bias = nullptr, *o_bias = nullptr;
  Param *q_norm = nullptr, *k_norm = nullptr;
  Param* shortcut_norm = nullptr;  // ScMoE: RMSNorm of the routed branch's shortcut input
  bool is_moe = false;
  FfnParams dense;
  MoeParams moe;
};

// What the forward pass of one layer keeps for backward.
struct LayerActivations {
  MoeActivations moe_act;  // routing statistics and balancing losses (MoE layers)
};

class TrainModel {
 public:
  // Binds the checkpoint-named tensors of `params` (shapes checked against `config`).
  TrainModel(const model::ModelConfig& config, ParamSet& params);

  const model::ModelConfig& config() const { return config_; }

  // tokens [B, S] (positions restart at 0 per row); targets [B, S] the next token of each
  // position, or null: predict tokens[b, s+1] from position s < S-1 (the twin's convention).
  // Adds d total / d theta to every grad (the caller zeroes them). logits_out, when given,
  // receives [B*S, V] logits.
  LossParts forward_backward(const int32_t* tokens, const int32_t* targets, int64_t batch,
                             int64_t seq, const LossOptions& opt,
                             std::vector<float>* logits_out = nullptr);
  // The loss only (validation); logits_out as in forward_backward.
  LossParts evaluate(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                     const LossOptions& opt, std::vector<float>* logits_out = nullptr);

  const LayerParams& layer_params(int layer) const { return layers_[size_t(layer)]; }

  // Routing of the last forward pass, per layer (empty for dense layers).
  const LayerActivations& layer_activations(int layer) const { return acts_[size_t(layer)]; }

  // Phase timings of later calls go to `profile` (null: off).
  void set_profile(PhaseTimes* profile) { profile_ = profile; }

  // Data / expert parallelism: `sum` all-reduces int64 vectors over the ranks that share each
  // batch (each holds some of its rows), `experts` runs the routed experts (null: all here).
  // The loss and gradients of each rank are then its share of the whole batch's: their sums
  // over ranks equal a single process's (dense gradients need an all-reduce by the caller).
  void set_parallel(std::function<void(std::vector<int64_t>&)> sum, ExpertCompute* experts) {
    parallel_sum_ = std::move(sum);
    parallel_experts_ = experts;
  }

  // Copies the embedding into a tied "lm_head.weight" kept in the file (before saving).
  void sync_tied_head();

 private:
  LossParts run(const int32_t* tokens, const int32_t* targets, int64_t batch, int64_t seq,
                const LossOptions& opt, bool backward, std::vector<float>* logits_out);
  void bind_layer_views();
  void attention_backward_layer(int l, int64_t B, int64_t S, float* dx);
  // dx [T, H] (the gradient at the last layer's output) -> the gradient at the embedding.
  void backward_layers(int64_t B, int64_t S, const MoeTrainOptions& opt);

  model::ModelConfig config_;
  Param* embed_ = nullptr;
  Param* final_norm_ = nullptr;
  Param* lm_head_ = nullptr;    // == embed_ when tied
  Param* tied_copy_ = nullptr;  // "lm_head.weight" in a tied checkpoint (kept in sync)
  std::vector<LayerParams> layers_;
  std::vector<LayerActivations> acts_;
  std::vector<float> rope_cos_, rope_sin_;  // [T, hd/2], position t % S
  // The forward: the model's layers (model/layers.h) on float32 views of the parameters,
  // recording per layer what the backward passes read.
  std::vector<model::LayerView> views_;
  std::vector<MoeViews> moe_views_;
  std::vector<model::LayerRecord> records_;
  model::LayerScratch layer_scratch_;
  std::vector<float> x_, xf_, rstd_f_, logits_;
  // Buffers of one step kept between steps (no per-step allocation and zeroing).
  struct Workspace {
    std::vector<float> dxf, dx, df, da, dxr;                // [T, H]
    std::vector<float> d_attn, dq, dk, dv, dq_raw, dk_raw;  // [T, qw] / [T, kvw]
    FfnActivations ffn_scratch;                             // dense FFN backward
    MoeBackwardScratch moe[2];       // routed branches in flight, by layer parity
    std::vector<double> op_seconds;  // [2 L] each operator's backward time, running average
  } ws_;
  PhaseTimes* profile_ = nullptr;
  LocalExperts local_experts_;
  std::function<void(std::vector<int64_t>&)> parallel_sum_;
  ExpertCompute* parallel_experts_ = nullptr;
  GlobalBatch global_;
};

}  // namespace sy::train
