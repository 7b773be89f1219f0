#include "model/layers.h"

#include <algorithm>
#include <chrono>

#include "model/overlap_schedule.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm_rows.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::model {

namespace {

// One forward through the stack. Operators are numbered 2l (attention of layer l) and 2l + 1
// (its FFN half); stream point p is the residual stream just before operator p. An MoE layer
// m's routed branch starts at point config.shortcut_point(m) and finishes inside operator
// 2m + 1; its experts run before the operator its slot names (2m + 2: after the shared expert).
class LayerRunner {
 public:
  LayerRunner(const ModelConfig& c, std::span<const LayerView> layers, int64_t T, float* x,
              LayerScratch& s, const moe::MoeRuntime& rt, std::span<LayerRecord> records,
              PhaseTimes* times)
      : c_(c),
        layers_(layers),
        T_(T),
        H_(c.hidden_size),
        x_(x),
        s_(s),
        rt_(rt),
        records_(records),
        times_(times),
        compute_before_(layers.size(), -1),
        in_flight_(layers.size(), false) {
    s_.op_seconds.resize(2 * layers.size(), 0.0);
  }

  void run(std::span<const SequenceChunk> chunks, const float* rope_cos, const float* rope_sin) {
    s_.ffn_out.resize(size_t(T_ * H_));
    for (size_t l = 0; l < layers_.size(); ++l) {
      const LayerView& w = layers_[l];
      LayerRecord* rec = record(l);
      const int64_t op = 2 * int64_t(l);
      start_shortcuts(op);
      before_operator(op);
      const auto a0 = std::chrono::steady_clock::now();
      PhaseTimer attention_time(times_, "attention fwd");
      if (T_ > 0)
        attention_block(c_, w.attention, int(l), chunks, T_, rope_cos, rope_sin, x_, s_.attention,
                        rec ? &rec->attention : nullptr);
      attention_time.stop();
      measured(op, seconds_since(a0));

      // FFN half: x += ffn(rmsnorm(x)). Phases are timed without nesting: a routed branch's
      // steps count as "moe fwd" wherever they run.
      start_shortcuts(op + 1);
      if (!w.is_moe) before_operator(op + 1);
      const auto f0 = std::chrono::steady_clock::now();
      PhaseTimer norm_time(times_, w.is_moe ? "moe fwd" : "dense ffn fwd");
      std::vector<float>& ffn_in = rec ? rec->ffn_in : s_.ffn_in;
      ffn_in.resize(size_t(T_ * H_));
      if (rec) {
        rec->x_mid.assign(x_, x_ + T_ * H_);
        rec->rstd.resize(size_t(T_));
      }
      stream_norm(c_, x_, w.ffn_norm, w.ffn_norm_bias, T_, ffn_in.data(),
                  rec ? rec->rstd.data() : nullptr);
      if (!w.is_moe) {
        moe::ffn_forward(w.dense, ffn_in.data(), T_, s_.ffn_out.data(), rec ? rec->dense : s_.ffn);
        norm_time.stop();
        measured(op + 1, seconds_since(f0));
      } else {
        norm_time.stop();
        double own_s = seconds_since(f0);  // this operator without the routed branch's steps
        moe::MoeScratch& ms = moe_scratch(l);
        if (c_.shortcut == Shortcut::kNone) start_branch(l, ffn_in.data());
        before_operator(op + 1);  // experts placed before the shared expert
        const auto s0 = std::chrono::steady_clock::now();
        PhaseTimer shared_time(times_, "moe fwd");
        moe::shared_forward(w.moe, ffn_in.data(), T_, H_, ms);
        shared_time.stop();
        own_s += seconds_since(s0);
        finish_branch(l);
        PhaseTimer combine_time(times_, "moe fwd");
        moe::combine_branches(w.moe, T_, H_, ms, s_.ffn_out.data());
        measured(op + 1, own_s);
      }
      if (c_.residual_multiplier != 1.0f)
        ops::scale(c_.residual_multiplier, T_ * H_, s_.ffn_out.data());
      ops::add(s_.ffn_out.data(), T_ * H_, x_);
    }
  }

 private:
  LayerRecord* record(size_t l) { return records_.empty() ? nullptr : &records_[l]; }
  moe::MoeScratch& moe_scratch(size_t l) {
    return records_.empty() ? s_.moe[l % 2] : records_[l].moe;
  }

  void measured(int64_t op, double seconds) {  // running average, recent calls weigh most
    double& avg = s_.op_seconds[size_t(op)];
    avg = avg == 0 ? seconds : 0.7 * avg + 0.3 * seconds;
  }

  // ScMoE: the branches whose shortcut reads stream point `point` start now, on its RMSNorm.
  void start_shortcuts(int64_t point) {
    if (c_.shortcut == Shortcut::kNone) return;
    for (size_t m = 0; m < layers_.size(); ++m) {
      if (!layers_[m].is_moe || c_.shortcut_point(int64_t(m)) != point) continue;
      SY_ASSERT(point >= 0);  // the config refuses a shortcut on layer 0
      moe::MoeScratch& ms = moe_scratch(m);
      ms.routed_in.resize(size_t(T_ * H_));
      LayerRecord* rec = record(m);
      if (rec) {
        rec->shortcut_src.assign(x_, x_ + T_ * H_);
        rec->shortcut_rstd.resize(size_t(T_));
      }
      ops::rmsnorm_rows(x_, layers_[m].shortcut_norm, T_, H_, c_.rms_norm_eps, ms.routed_in.data(),
                        rec ? rec->shortcut_rstd.data() : nullptr);
      start_branch(m, ms.routed_in.data());
    }
  }

  // Router and dispatch of layer m's routed branch on xr, and the slot its experts will run at.
  void start_branch(size_t m, const float* xr) {
    PhaseTimer t(times_, "moe fwd");
    moe::routed_start(layers_[m].moe, xr, T_, H_, moe_scratch(m), rt_, int(m));
    in_flight_[m] = true;
    const int64_t first = std::max<int64_t>(0, c_.shortcut_point(int64_t(m)));
    const int64_t last = 2 * int64_t(m) + 1;  // the window: operators first .. last
    const std::span<const double> window(s_.op_seconds.data() + first, size_t(last - first + 1));
    const moe::ExchangeEstimate est = moe::routed_estimate(rt_, int(m));
    int slot = rt_.expert_slot >= 0
                   ? std::min<int>(rt_.expert_slot, int(window.size()))
                   : choose_expert_slot(window, est.dispatch_s, est.combine_s, est.known);
    if (moe::routed_blocking(rt_)) slot = 0;
    compute_before_[m] = first + slot;
    if (rt_.backend) rt_.backend->note_slot(int(m), slot, int(window.size()));
  }

  // Before operator `op`: the exchanges in flight progress, and the branches whose slot is
  // here run their experts.
  void before_operator(int64_t op) {
    for (size_t m = 0; m < layers_.size(); ++m) {
      if (!in_flight_[m]) continue;
      if (compute_before_[m] == op)
        run_experts(m);
      else
        moe::routed_progress(rt_, int(m));
    }
  }

  void run_experts(size_t m) {
    PhaseTimer t(times_, "moe fwd");
    moe::routed_compute(layers_[m].moe, moe_scratch(m), rt_, int(m));
    compute_before_[m] = -1;  // done
  }

  // The experts (if their slot is the last) and the combine exchange of layer m's branch.
  void finish_branch(size_t m) {
    if (compute_before_[m] >= 0) run_experts(m);
    PhaseTimer t(times_, "moe fwd");
    moe::routed_finish(moe_scratch(m), rt_, int(m));
    in_flight_[m] = false;
  }

  const ModelConfig& c_;
  std::span<const LayerView> layers_;
  const int64_t T_, H_;
  float* x_;
  LayerScratch& s_;
  const moe::MoeRuntime& rt_;
  std::span<LayerRecord> records_;
  PhaseTimes* times_;
  std::vector<int64_t> compute_before_;  // per MoE layer in flight: the operator its experts
                                         // precede; -1 once they ran
  std::vector<bool> in_flight_;
};

}  // namespace

void run_layers(const ModelConfig& c, std::span<const LayerView> layers,
                std::span<const SequenceChunk> chunks, int64_t T, const float* rope_cos,
                const float* rope_sin, float* x, LayerScratch& s, const moe::MoeRuntime& runtime,
                std::span<LayerRecord> records, PhaseTimes* times) {
  SY_ASSERT(records.empty() || records.size() == layers.size());
  LayerRunner(c, layers, T, x, s, runtime, records, times).run(chunks, rope_cos, rope_sin);
}

void embed_tokens(const ops::WeightView& embed, std::span<const int32_t> tokens, float* x) {
  const int64_t H = embed.cols;
  for (size_t i = 0; i < tokens.size(); ++i) {
    const int32_t id = tokens[i];
    if (id < 0 || id >= embed.rows)
      fail("token id {} is outside the vocabulary (size {})", id, embed.rows);
    to_f32(embed.dtype, embed.row(id), x + int64_t(i) * H, size_t(H));
  }
}

void stream_norm(const ModelConfig& c, const float* x, const float* w, const float* b, int64_t rows,
                 float* y, float* rstd) {
  if (c.layer_norm) {
    SY_ASSERT_MSG(!rstd && (b || !c.norm_bias), "LayerNorm has no backward pass here");
    ops::layernorm_rows(x, w, b, rows, c.hidden_size, c.rms_norm_eps, y);
  } else {
    ops::rmsnorm_rows(x, w, rows, c.hidden_size, c.rms_norm_eps, y, rstd);
  }
}

void lm_head(const ModelConfig& c, const float* norm, const ops::WeightView& head, const float* x,
             int64_t T, std::span<const int64_t> rows, float* normed, float* rstd, float* logits,
             const float* norm_bias) {
  const int64_t H = c.hidden_size;
  const int64_t n = rows.empty() ? T : int64_t(rows.size());
  if (rows.empty()) {
    stream_norm(c, x, norm, norm_bias, T, normed, rstd);
  } else {
    for (int64_t r = 0; r < n; ++r)
      stream_norm(c, x + rows[size_t(r)] * H, norm, norm_bias, 1, normed + r * H,
                  rstd ? rstd + r : nullptr);
  }
  ops::matmul(head, normed, n, logits);
  if (c.logits_scaling != 1.0f)  // Granite divides (not multiplies by the inverse), as here
    for (int64_t i = 0, m = n * head.rows; i < m; ++i) logits[i] /= c.logits_scaling;
}

}  // namespace sy::model
