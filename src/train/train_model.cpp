#include "train/train_model.h"

#include <algorithm>
#include <cstring>
#include <string>

#include "model/attention.h"
#include "model/tensor_names.h"
#include "ops/elementwise.h"
#include "ops/linear.h"
#include "ops/norm_rows.h"
#include "train/row_ops.h"
#include "util/error.h"

namespace sy::train {

namespace {

using model::QkNorm;

Param* bind(ParamSet& ps, const std::string& name, std::vector<int64_t> shape) {
  Param& p = ps.get(name);
  if (p.shape != shape)
    fail("tensor '{}' has shape [{}] but config.json implies [{}]", name, fmt::join(p.shape, ", "),
         fmt::join(shape, ", "));
  return &p;
}

FfnParams bind_ffn(ParamSet& ps, const model::FfnNames& n, int64_t H, int64_t I) {
  return FfnParams{bind(ps, n.gate, {I, H}), bind(ps, n.up, {I, H}), bind(ps, n.down, {H, I})};
}

// torch.clamp's gradient: passed where -limit <= x <= limit, else 0.
void clamp_backward(const std::vector<float>& x, float limit, std::vector<float>& grad) {
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] < -limit || x[i] > limit) grad[i] = 0.0f;
}

}  // namespace

TrainModel::TrainModel(const model::ModelConfig& c, ParamSet& ps) : config_(c) {
  if (c.rotary_dim > 0 || c.has_scaled_stream() || c.mla.enabled() || c.attention_sinks ||
      !c.layer_window.empty() || c.swiglu_limit > 0 || c.rope_scaling.yarn || c.rope_interleaved ||
      c.layer_norm || c.router.score == moe::ScoreFunc::kSparseMixer ||
      c.qk_norm == model::QkNorm::kPerHeadAfterRope || c.qk_norm == model::QkNorm::kL2AfterRope ||
      !c.layer_chunk.empty() || !c.layer_nope.empty() || c.expert_input_scaled ||
      c.rope_scaling.llama3 || c.rope_scaling.longrope)
    fail(
        "training {} models is not implemented: the backward pass has no partial rotary "
        "(partial_rotary_factor), Granite multipliers, multi-head latent attention, sliding "
        "windows, attention sinks, GPT-OSS experts, YaRN, interleaved RoPE, LayerNorm, "
        "SparseMixer, q/k norms after RoPE (Hunyuan, Llama 4), chunked attention, NoPE "
        "layers, input-weighted experts (Llama 4) or llama3 / LongRoPE scaling yet",
        c.family_name());
  const int64_t H = c.hidden_size, V = c.vocab_size, qw = c.q_width(), kvw = c.kv_width();
  embed_ = bind(ps, "model.embed_tokens.weight", {V, H});
  final_norm_ = bind(ps, "model.norm.weight", {H});
  if (c.tie_word_embeddings) {
    lm_head_ = embed_;
    if (Param* copy = ps.find("lm_head.weight")) {
      tied_copy_ = copy;
      copy->trainable = false;  // a copy of the embedding, refreshed before saving
    }
  } else {
    lm_head_ = bind(ps, "lm_head.weight", {V, H});
  }
  layers_.resize(size_t(c.num_layers));
  acts_.resize(size_t(c.num_layers));
  for (int64_t i = 0; i < c.num_layers; ++i) {
    LayerParams& L = layers_[size_t(i)];
    const std::string p = model::layer_prefix(i);
    L.attn_norm = bind(ps, p + "input_layernorm.weight", {H});
    L.ffn_norm = bind(ps, p + "post_attention_layernorm.weight", {H});
    const std::string a = p + "self_attn.";
    L.q = bind(ps, a + "q_proj.weight", {qw, H});
    L.k = bind(ps, a + "k_proj.weight", {kvw, H});
    L.v = bind(ps, a + "v_proj.weight", {kvw, H});
    L.o = bind(ps, a + "o_proj.weight", {H, qw});
    if (c.qkv_bias) {
      L.q_bias = bind(ps, a + "q_proj.bias", {qw});
      L.k_bias = bind(ps, a + "k_proj.bias", {kvw});
      L.v_bias = bind(ps, a + "v_proj.bias", {kvw});
    }
    if (c.o_bias) L.o_bias = bind(ps, a + "o_proj.bias", {H});
    if (c.qk_norm == QkNorm::kPerHead) {
      L.q_norm = bind(ps, a + "q_norm.weight", {c.head_dim});
      L.k_norm = bind(ps, a + "k_norm.weight", {c.head_dim});
    } else if (c.qk_norm == QkNorm::kFullWidth) {
      L.q_norm = bind(ps, a + "q_norm.weight", {qw});
      L.k_norm = bind(ps, a + "k_norm.weight", {kvw});
    }
    L.is_moe = c.layer_is_moe[size_t(i)];
    if (!L.is_moe) {
      L.dense = bind_ffn(ps, model::dense_ffn_names(c, i), H, c.dense_intermediate_size);
      continue;
    }
    const int64_t E = c.router.num_experts, I = c.expert_intermediate_size;
    const std::string m = model::moe_prefix(c, i);
    MoeParams& moe = L.moe;
    moe.router = &config_.router;
    moe.gate = bind(ps, m + "gate.weight", {E, H});
    if (ps.find(m + "gate.noise.weight")) moe.noise = bind(ps, m + "gate.noise.weight", {E, H});
    if (c.router.has_selection_bias) {
      moe.selection_bias = bind(ps, m + "gate.e_score_correction_bias", {E});
      moe.selection_bias->trainable = false;  // moved by aux-loss-free balancing, not by gradients
    }
    for (int64_t e = 0; e < E; ++e) {
      FfnParams f = bind_ffn(ps, model::expert_names(c, i, e), H, I);
      f.gate->expert = f.up->expert = f.down->expert = true;
      moe.experts.push_back(f);
    }
    if (c.shared_intermediate_size > 0) {
      moe.shared = bind_ffn(ps, model::shared_expert_names(c, i), H, c.shared_intermediate_size);
      if (c.shared_expert_gated)
        moe.shared_gate = bind(ps, m + "shared_expert_gate.weight", {1, H});
      if (c.branch_softmax_gate) moe.combine_gate = bind(ps, m + "combine_gate.weight", {2, H});
    }
    if (c.shortcut != model::Shortcut::kNone)
      L.shortcut_norm = bind(ps, p + "shortcut_layernorm.weight", {H});
  }
}

void TrainModel::sync_tied_head() {
  if (tied_copy_) tied_copy_->value = embed_->value;
}

LossParts TrainModel::forward_backward(const int32_t* tokens, const int32_t* targets, int64_t B,
                                       int64_t S, const LossOptions& opt,
                                       std::vector<float>* logits_out) {
  return run(tokens, targets, B, S, opt, true, logits_out);
}

LossParts TrainModel::evaluate(const int32_t* tokens, const int32_t* targets, int64_t B, int64_t S,
                               const LossOptions& opt, std::vector<float>* logits_out) {
  return run(tokens, targets, B, S, opt, false, logits_out);
}

// The model's layers as inference sees them, on float32 views of the parameters. Rebuilt per
// run: the views follow the parameters' storage.
void TrainModel::bind_layer_views() {
  auto data = [](const Param* p) { return p ? p->value.data() : nullptr; };
  views_.resize(layers_.size());
  moe_views_.resize(layers_.size());
  for (size_t l = 0; l < layers_.size(); ++l) {
    const LayerParams& L = layers_[l];
    model::LayerView& v = views_[l];
    v.attention = model::AttentionWeights{L.attn_norm->value.data(),
                                          L.q->view(),
                                          L.k->view(),
                                          L.v->view(),
                                          L.o->view(),
                                          data(L.q_bias),
                                          data(L.k_bias),
                                          data(L.v_bias),
                                          data(L.o_bias),
                                          data(L.q_norm),
                                          data(L.k_norm)};
    v.ffn_norm = L.ffn_norm->value.data();
    v.shortcut_norm = data(L.shortcut_norm);
    v.is_moe = L.is_moe;
    if (L.is_moe) {
      bind_views(L.moe, moe_views_[l]);
      v.moe = moe_views_[l].block;
    } else {
      v.dense = weight_views(L.dense);
    }
  }
}

void TrainModel::attention_backward_layer(int l, int64_t B, int64_t S, float* dx) {
  const model::ModelConfig& c = config_;
  const LayerParams& L = layers_[size_t(l)];
  const model::AttentionRecord& A = records_[size_t(l)].attention;
  const int64_t T = B * S, H = c.hidden_size, hd = c.head_dim, qw = c.q_width(), kvw = c.kv_width();
  // o_proj
  std::vector<float>& d_attn = ws_.d_attn;
  std::vector<float>&dq = ws_.dq, &dk = ws_.dk, &dv = ws_.dv;
  d_attn.resize(size_t(T * qw));
  dq.resize(size_t(T * qw));
  dk.resize(size_t(T * kvw));
  dv.resize(size_t(T * kvw));
  ops::linear_backward_weight(dx, T, H, A.attn.data(), qw, L.o->grad.data());
  if (L.o_bias) ops::bias_backward(dx, T, H, L.o_bias->grad.data());
  ops::linear_backward_input(dx, T, H, L.o->value.data(), qw, d_attn.data());
  // attention core
  const AttentionDims d{B, S, c.num_heads, c.num_kv_heads, hd};
  attention_backward(d, A.q.data(), A.k.data(), A.v.data(), A.probs.data(), d_attn.data(),
                     dq.data(), dk.data(), dv.data());
#pragma omp parallel for schedule(dynamic, 64)
  for (int64_t t = 0; t < T; ++t) {
    const float* cs = rope_cos_.data() + t * (hd / 2);
    const float* sn = rope_sin_.data() + t * (hd / 2);
    for (int64_t h = 0; h < c.num_heads; ++h)
      rope_backward(dq.data() + t * qw + h * hd, hd, cs, sn);
    for (int64_t h = 0; h < c.num_kv_heads; ++h)
      rope_backward(dk.data() + t * kvw + h * hd, hd, cs, sn);
  }
  if (c.clip_qkv > 0) {  // the clamp passes gradient only where it did not clip
    clamp_backward(A.q_unclipped, c.clip_qkv, dq);
    clamp_backward(A.k_unclipped, c.clip_qkv, dk);
    clamp_backward(A.v_unclipped, c.clip_qkv, dv);
  }
  if (c.qk_norm != QkNorm::kNone) {
    const bool per_head = c.qk_norm == QkNorm::kPerHead;
    const int64_t qn = per_head ? hd : qw, kn = per_head ? hd : kvw;
    std::vector<float>&dq_raw = ws_.dq_raw, &dk_raw = ws_.dk_raw;
    dq_raw.resize(dq.size());
    dk_raw.resize(dk.size());
    rmsnorm_backward(dq.data(), A.q_raw.data(), L.q_norm->value.data(), A.rstd_q.data(),
                     T * qw / qn, qn, dq_raw.data(), L.q_norm->grad.data(), false);
    rmsnorm_backward(dk.data(), A.k_raw.data(), L.k_norm->value.data(), A.rstd_k.data(),
                     T * kvw / kn, kn, dk_raw.data(), L.k_norm->grad.data(), false);
    dq.swap(dq_raw);
    dk.swap(dk_raw);
  }
  if (L.q_bias) {
    ops::bias_backward(dq.data(), T, qw, L.q_bias->grad.data());
    ops::bias_backward(dk.data(), T, kvw, L.k_bias->grad.data());
    ops::bias_backward(dv.data(), T, kvw, L.v_bias->grad.data());
  }
  ops::linear_backward_weight(dq.data(), T, qw, A.normed.data(), H, L.q->grad.data());
  ops::linear_backward_weight(dk.data(), T, kvw, A.normed.data(), H, L.k->grad.data());
  ops::linear_backward_weight(dv.data(), T, kvw, A.normed.data(), H, L.v->grad.data());
  std::vector<float>& da = ws_.da;
  da.resize(size_t(T * H));
  ops::linear_backward_input(dq.data(), T, qw, L.q->value.data(), H, da.data());
  ops::linear_backward_input(dk.data(), T, kvw, L.k->value.data(), H, da.data(), true);
  ops::linear_backward_input(dv.data(), T, kvw, L.v->value.data(), H, da.data(), true);
  rmsnorm_backward(da.data(), A.x_in.data(), L.attn_norm->value.data(), A.rstd.data(), T, H, dx,
                   L.attn_norm->grad.data(), true);
}

LossParts TrainModel::run(const int32_t* tokens, const int32_t* targets_in, int64_t B, int64_t S,
                          const LossOptions& opt, bool backward, std::vector<float>* logits_out) {
  const model::ModelConfig& c = config_;
  const int64_t T = B * S, H = c.hidden_size, V = c.vocab_size, hd = c.head_dim;
  if (B < 1 || S < (targets_in ? 1 : 2))
    fail("a training batch needs at least 1 row of {} tokens, got [{}, {}]", targets_in ? 1 : 2, B,
         S);
  for (int64_t i = 0; i < T; ++i) {
    if (tokens[i] < 0 || tokens[i] >= V)
      fail("token id {} at position {} is outside the vocabulary (size {})", tokens[i], i, V);
    if (targets_in && (targets_in[i] < -1 || targets_in[i] >= V))
      fail("target id {} at position {} is outside the vocabulary (size {})", targets_in[i], i, V);
  }
  rope_cos_.resize(size_t(T * hd / 2));
  rope_sin_.resize(size_t(T * hd / 2));
  for (int64_t s = 0; s < S; ++s)  // every row's position: positions restart per sequence
    model::rope_tables(s, hd, c.rope_theta, rope_cos_.data() + s * (hd / 2),
                       rope_sin_.data() + s * (hd / 2));
  const int64_t per_seq = S * (hd / 2);
  for (int64_t b = 1; b < B; ++b) {
    std::copy(rope_cos_.begin(), rope_cos_.begin() + per_seq, rope_cos_.begin() + b * per_seq);
    std::copy(rope_sin_.begin(), rope_sin_.begin() + per_seq, rope_sin_.begin() + b * per_seq);
  }
  int num_moe = 0;
  for (const LayerParams& L : layers_) num_moe += L.is_moe ? 1 : 0;
  MoeTrainOptions mopt;
  mopt.capacity_factor = opt.capacity_factor;
  mopt.experts = parallel_experts_ ? parallel_experts_ : &local_experts_;
  if (parallel_sum_) {
    std::vector<int64_t> n{T};
    parallel_sum_(n);
    global_.tokens = n[0];
    global_.sum_counts = parallel_sum_;
    mopt.global = &global_;
  }
  if (num_moe > 0) {
    mopt.aux_scale = opt.aux_coef / float(num_moe);
    mopt.z_scale = opt.z_coef / float(num_moe);
  }

  // ---- forward: embedding, then the model's layers (model/layers.h) recording for backward
  x_.resize(size_t(T * H));
  model::embed_tokens(embed_->view(), {tokens, size_t(T)}, x_.data());
  {
    bind_layer_views();
    std::vector<model::SequenceChunk> chunks(static_cast<size_t>(B));
    for (int64_t b = 0; b < B; ++b) chunks[size_t(b)].tokens = {tokens + b * S, size_t(S)};
    mopt.noise_seed = opt.noise_seed;
    mopt.noise_step = opt.noise_step;
    mopt.noise_layers = c.num_layers;
    records_.resize(layers_.size());
    model::run_layers(c, views_, chunks, T, rope_cos_.data(), rope_sin_.data(), x_.data(),
                      layer_scratch_, train_runtime(mopt), records_, profile_);
    PhaseTimer pt(profile_, "moe statistics");
    for (size_t l = 0; l < layers_.size(); ++l) {  // balancing statistics of the MoE layers
      if (!layers_[l].is_moe) continue;
      mopt.layer = int(l);
      moe_statistics(layers_[l].moe, mopt, T, records_[l].moe, acts_[l].moe_act);
    }
  }
  PhaseTimer pt_head(profile_, "lm head + loss fwd");
  xf_.resize(size_t(T * H));
  rstd_f_.resize(size_t(T));
  logits_.resize(size_t(T * V));
  model::lm_head(c, final_norm_->value.data(), lm_head_->view(), x_.data(), T, {}, xf_.data(),
                 rstd_f_.data(), logits_.data());
  if (logits_out) *logits_out = logits_;

  // ---- loss
  LossParts loss;
  std::vector<int32_t> targets(static_cast<size_t>(T));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t s = 0; s < S; ++s)
      targets[size_t(b * S + s)] =
          targets_in ? targets_in[b * S + s] : (s + 1 < S ? tokens[b * S + s + 1] : -1);
  for (int32_t t : targets) loss.predicted += t >= 0 ? 1 : 0;
  if (parallel_sum_) {  // the mean is over the whole batch's positions
    std::vector<int64_t> n{loss.predicted};
    parallel_sum_(n);
    loss.predicted = n[0];
  }
  if (loss.predicted == 0) fail("a training batch has no target to predict");
  const float scale = 1.0f / float(loss.predicted);
  loss.ce = cross_entropy_forward_backward(logits_.data(), targets.data(), T, V, scale) /
            double(loss.predicted);
  for (const LayerActivations& A : acts_) {
    if (A.moe_act.counts.empty()) continue;
    loss.aux += A.moe_act.aux / num_moe;
    loss.z += A.moe_act.z / num_moe;
  }
  for (size_t l = 0; l < layers_.size(); ++l)
    if (!layers_[l].is_moe) acts_[l].moe_act.counts.clear();
  loss.total = loss.ce + double(opt.aux_coef) * loss.aux + double(opt.z_coef) * loss.z;
  pt_head.stop();
  if (!backward) return loss;

  // ---- backward (logits_ now holds dloss/dlogits)
  std::vector<float>&dxf = ws_.dxf, &dx = ws_.dx;
  dxf.resize(size_t(T * H));
  dx.resize(size_t(T * H));
  PhaseTimer pt_head_bwd(profile_, "lm head bwd");
  ops::linear_backward_weight(logits_.data(), T, V, xf_.data(), H, lm_head_->grad.data());
  ops::linear_backward_input(logits_.data(), T, V, lm_head_->value.data(), H, dxf.data());
  rmsnorm_backward(dxf.data(), x_.data(), final_norm_->value.data(), rstd_f_.data(), T, H,
                   dx.data(), final_norm_->grad.data(), false);
  pt_head_bwd.stop();
  backward_layers(B, S, mopt);
  PhaseTimer pt_embed(profile_, "embedding bwd");
  float* de = embed_->grad.data();
  for (int64_t t = 0; t < T; ++t) {
    float* row = de + int64_t(tokens[t]) * H;
    for (int64_t i = 0; i < H; ++i) row[i] += dx[size_t(t * H + i)];
  }
  return loss;
}

}  // namespace sy::train
