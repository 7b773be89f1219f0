#include "model/model.h"

#include <algorithm>
#include <cstring>

#include "model/attention.h"
#include "model/rope.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm_rows.h"
#include "util/error.h"

namespace sy::model {

Model::Model(std::string dir, ModelConfig config, ModelWeights weights)
    : dir_(std::move(dir)), config_(std::move(config)), weights_(std::move(weights)) {
  bind_blocks();
}

Model::Model(Model&& other) noexcept
    : dir_(std::move(other.dir_)),
      config_(std::move(other.config_)),
      weights_(std::move(other.weights_)),
      cache_(std::move(other.cache_)) {
  bind_blocks();
}

Model& Model::operator=(Model&& other) noexcept {
  dir_ = std::move(other.dir_);
  config_ = std::move(other.config_);
  weights_ = std::move(other.weights_);
  cache_ = std::move(other.cache_);
  bind_blocks();
  return *this;
}

// The MoE blocks point into config_ and weights_, so they are rebuilt whenever those move.
void Model::bind_blocks() {
  layers_.assign(weights_.layers.size(), LayerView{});
  auto data_or_null = [](const std::vector<float>& v) { return v.empty() ? nullptr : v.data(); };
  for (size_t l = 0; l < weights_.layers.size(); ++l) {
    const LayerWeights& w = weights_.layers[l];
    LayerView& v = layers_[l];
    v.attention = AttentionWeights{w.attn_norm.data(),
                                   w.q,
                                   w.k,
                                   w.v,
                                   w.o,
                                   data_or_null(w.q_bias),
                                   data_or_null(w.k_bias),
                                   data_or_null(w.v_bias),
                                   data_or_null(w.o_bias),
                                   data_or_null(w.q_norm),
                                   data_or_null(w.k_norm),
                                   config_.mla.enabled() ? &w.mla : nullptr};
    v.attention.sinks = data_or_null(w.sinks);
    v.attention.norm_bias = data_or_null(w.attn_norm_bias);
    v.ffn_norm_bias = data_or_null(w.ffn_norm_bias);
    v.ffn_norm = w.ffn_norm.data();
    v.is_moe = w.is_moe;
    if (!w.is_moe) {
      v.dense = w.dense;
      continue;
    }
    moe::MoeBlock& b = v.moe;
    b.router = &config_.router;
    b.router_weight = w.moe.router.data();
    b.selection_bias = data_or_null(w.moe.selection_bias);
    b.router_bias = data_or_null(w.moe.router_bias);
    b.scale_inputs = config_.expert_input_scaled;
    b.experts = w.moe.experts;
    b.shared = w.moe.has_shared ? &w.moe.shared : nullptr;
    b.shared_gate = data_or_null(w.moe.shared_gate);
    b.combine_gate = data_or_null(w.moe.combine_gate);
    b.offload = cache_.get();
    v.shortcut_norm = data_or_null(w.shortcut_norm);
  }
}

Model Model::load(const std::string& model_dir, const ExpertMask& owned_experts,
                  const moe::OffloadConfig* offload) {
  ModelConfig config = load_config(model_dir);
  ModelWeights weights = load_weights(model_dir, config, owned_experts, offload != nullptr);
  Model m(model_dir, std::move(config), std::move(weights));
  if (offload) {
    m.cache_ = std::make_unique<moe::ExpertCache>(m.weights_.offloaded, *offload);
    m.bind_blocks();
  }
  return m;
}

moe::LoadStats Model::new_load_stats() const {
  return moe::LoadStats(int(config_.num_layers), config_.router.num_experts);
}

void Model::forward(std::span<const SequenceChunk> chunks, LogitsFor which, float* logits,
                    Workspace& ws, moe::LoadStats* stats) const {
  moe::MoeRuntime runtime;
  runtime.stats = stats;
  forward(chunks, which, logits, ws, runtime);
}

void Model::forward(std::span<const SequenceChunk> chunks, LogitsFor which, float* logits,
                    Workspace& ws, const moe::MoeRuntime& runtime) const {
  const ModelConfig& c = config_;
  const int64_t H = c.hidden_size;
  int64_t T = 0;
  ++runtime.forward_calls;
  runtime.decode_step = !chunks.empty();
  for (const SequenceChunk& ch : chunks) runtime.decode_step &= ch.tokens.size() == 1;
  for (const SequenceChunk& ch : chunks) {
    SY_ASSERT(ch.cache != nullptr);
    ch.cache->reserve_more(int64_t(ch.tokens.size()));
    SY_ASSERT_MSG(!ch.tokens.empty(), "a sequence chunk must hold at least one token");
    T += int64_t(ch.tokens.size());
  }
  runtime.token_tags.clear();  // ReaLB's modality tags of this call's tokens, in row order
  if (runtime.modality.active())
    for (const SequenceChunk& ch : chunks)
      for (int32_t id : ch.tokens) runtime.token_tags.push_back(runtime.modality.tagged(id));

  ws.x.resize(size_t(T * H));
  const int64_t half = c.rope_dim() / 2;
  ws.rope_cos.resize(size_t(T * half));
  ws.rope_sin.resize(size_t(T * half));

  // Embedding lookup and per-token rotary tables.
  int64_t row = 0;
  int64_t seq_len = 0;  // the call's largest position + 1
  for (const SequenceChunk& ch : chunks)
    seq_len = std::max(seq_len, ch.cache->size() + int64_t(ch.tokens.size()));
  if (const RopeScaling& y = c.rope_scaling;
      y.longrope && double(seq_len) > y.original_max_positions)
    for (const SequenceChunk& ch : chunks)
      if (ch.cache->size() > 0 && double(ch.cache->size()) <= y.original_max_positions)
        fail(
            "this sequence grows past LongRoPE's original {} positions, where every key must be "
            "rotated again with the long factors (transformers recomputes the whole cache); "
            "Switchyard does not re-encode a KV cache yet: run the whole sequence in one call "
            "(score) or keep it within {} positions",
            y.original_max_positions, y.original_max_positions);
  const RopeTable rope = rope_table(c, seq_len);
  for (const SequenceChunk& ch : chunks) {
    embed_tokens(weights_.embed, ch.tokens, ws.x.data() + row * H);
    for (size_t i = 0; i < ch.tokens.size(); ++i, ++row)
      rope_row(rope, ch.cache->size() + int64_t(i), ws.rope_cos.data() + row * half,
               ws.rope_sin.data() + row * half);
  }
  if (c.embedding_multiplier != 1.0f) ops::scale(c.embedding_multiplier, T * H, ws.x.data());

  run_layers(c, layers_, chunks, T, ws.rope_cos.data(), ws.rope_sin.data(), ws.x.data(), ws.layers,
             runtime, {}, ws.times);
  if (T == 0) return;
  for (const SequenceChunk& ch : chunks) ch.cache->advance(int64_t(ch.tokens.size()));

  // Final norm and LM head, only on the rows whose logits are wanted (empty: all).
  std::vector<int64_t> rows;
  if (which == LogitsFor::kLastToken) {
    int64_t end = 0;
    for (const SequenceChunk& ch : chunks) {
      end += int64_t(ch.tokens.size());
      rows.push_back(end - 1);
    }
  }
  ws.last.resize(size_t(rows.empty() ? T : int64_t(rows.size())) * size_t(H));
  lm_head(c, weights_.final_norm.data(), weights_.lm_head, ws.x.data(), T, rows, ws.last.data(),
          nullptr, logits,
          weights_.final_norm_bias.empty() ? nullptr : weights_.final_norm_bias.data());
}

}  // namespace sy::model
