// The stack of transformer layers, one function for inference and training: per layer the
// attention half (attention_block.h), then the FFN half -- RMSNorm, the MoE block or a dense
// SwiGLU, residual add. Training passes records and gets back, per layer, what its backward
// passes read; inference passes none.
//
// The routed branch of an MoE layer is started as soon as its input exists and completed just
// before the layer's FFN output is added, with other operators in between while its exchanges
// are in flight: the shared expert for a plain MoE layer, and for ScMoE (docs/scmoe.md) every
// operator after the shortcut's source point. Its experts run at the slot chosen by
// overlap_schedule.h from the operator times this scratch has measured.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "model/attention_block.h"
#include "model/config.h"
#include "model/kv_cache.h"
#include "moe/moe_layer.h"
#include "util/phase_times.h"

namespace sy::model {

// One layer's weights as views (a loaded checkpoint's, or training's float32 parameters).
struct LayerView {
  AttentionWeights attention;
  const float* ffn_norm = nullptr;       // [H]
  const float* ffn_norm_bias = nullptr;  // [H] LayerNorm models (Phi-3.5-MoE)
  bool is_moe = false;
  moe::MoeBlock moe;                     // when is_moe
  const float* shortcut_norm = nullptr;  // [H] ScMoE: RMSNorm of the routed branch's input
  moe::FfnWeights dense;                 // otherwise
};

// What one layer keeps for backward (training).
struct LayerRecord {
  AttentionRecord attention;
  std::vector<float> x_mid;          // [T, H] the residual stream after attention
  std::vector<float> ffn_in, rstd;   // its RMSNorm [T, H] and 1/rms [T]
  std::vector<float> shortcut_src;   // [T, H] ScMoE: the stream the routed branch read
  std::vector<float> shortcut_rstd;  // [T] its 1/rms
  moe::MoeScratch moe;               // the MoE block's buffers (MoE layers)
  moe::FfnScratch dense;             // the dense FFN's (other layers)
  LayerRecord() { moe.shared_ffn.keep = dense.keep = true; }
};

// Buffers reused across calls (inference), and the measured operator times.
struct LayerScratch {
  AttentionScratch attention;
  std::vector<float> ffn_in, ffn_out;  // [T, H]
  // MoE layers' buffers by parity: a routed branch may still be in flight when the next MoE
  // layer's starts (ScMoE with an MoE block in every layer).
  std::array<moe::MoeScratch, 2> moe;
  moe::FfnScratch ffn;
  // Seconds per operator (2l: attention of layer l, 2l+1: its FFN half without the routed
  // experts), a running average over calls: the slot scheduler's C_i.
  std::vector<double> op_seconds;
};

// x [T, H] through every layer. rope_cos / rope_sin: [T, head_dim / 2] per row (see
// attention_block for the chunks' two modes). With no tokens (a rank without work under expert
// parallelism) only the MoE blocks run: their all-to-alls are collective. records: empty, or
// one per layer (whole sequences; see attention_block). times (optional): wall time of the
// "attention fwd", "moe fwd" and "dense ffn fwd" phases.
void run_layers(const ModelConfig& config, std::span<const LayerView> layers,
                std::span<const SequenceChunk> chunks, int64_t num_tokens, const float* rope_cos,
                const float* rope_sin, float* x, LayerScratch& scratch,
                const moe::MoeRuntime& runtime, std::span<LayerRecord> records = {},
                PhaseTimes* times = nullptr);

// x [n, H] = the embedding rows of `tokens` (any stored dtype); sy::Error for an id outside the
// vocabulary.
void embed_tokens(const ops::WeightView& embed, std::span<const int32_t> tokens, float* x);

// The residual stream's norm: RMSNorm (* w), or LayerNorm (* w + b) where the config says so
// (rstd, for backward, only with RMSNorm).
void stream_norm(const ModelConfig& config, const float* x, const float* w, const float* b,
                 int64_t rows, float* y, float* rstd = nullptr);

// The final RMSNorm and LM head: logits [n, V] = head(rmsnorm(x_r) * norm) for the listed rows
// of x [num_tokens, H], or every row when `rows` is empty. normed [n, H] and rstd [n] (optional)
// keep what a backward pass reads.
void lm_head(const ModelConfig& config, const float* norm, const ops::WeightView& head,
             const float* x, int64_t num_tokens, std::span<const int64_t> rows, float* normed,
             float* rstd, float* logits, const float* norm_bias = nullptr);

}  // namespace sy::model
