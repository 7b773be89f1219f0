#include "model/attention_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/attention.h"
#include "model/layers.h"
#include "model/rope.h"
#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm_rows.h"
#include "util/error.h"

namespace sy::model {

namespace {

void add_bias(float* x, int64_t rows, int64_t n, const float* bias) {
  if (!bias) return;
  for (int64_t r = 0; r < rows; ++r) ops::add(bias, n, x + r * n);
}

void clamp_all(float* x, size_t n, float limit) {
  for (size_t i = 0; i < n; ++i) x[i] = std::clamp(x[i], -limit, limit);
}

}  // namespace

void attention_block(const ModelConfig& c, const AttentionWeights& w, int layer,
                     std::span<const SequenceChunk> chunks, int64_t T, const float* rope_cos,
                     const float* rope_sin, float* x, AttentionScratch& s, AttentionRecord* rec) {
  if (c.mla.enabled()) {
    SY_ASSERT_MSG(!rec && w.mla, "MLA has no backward pass (training refuses MLA models)");
    const int64_t H = c.hidden_size, ow = c.num_heads * c.mla.v_head_dim;
    s.normed.resize(size_t(T * H));
    s.attn.resize(size_t(T * ow));
    s.proj.resize(size_t(T * H));
    stream_norm(c, x, w.norm, w.norm_bias, T, s.normed.data());
    mla_attention(c, *w.mla, layer, chunks, T, s.normed.data(), rope_cos, rope_sin, s.attn.data(),
                  s.mla);
    ops::matmul(w.o, s.attn.data(), T, s.proj.data());
    add_bias(s.proj.data(), T, H, w.o_bias);
    ops::add(s.proj.data(), T * H, x);
    return;
  }
  const int64_t H = c.hidden_size, hd = c.head_dim, qw = c.q_width(), kvw = c.kv_width();
  const float eps = c.rms_norm_eps;
  // With a record the intermediate values live in it (backward reads them), else in scratch.
  std::vector<float>& normed = rec ? rec->normed : s.normed;
  std::vector<float>& q = rec ? rec->q : s.q;
  std::vector<float>& k = rec ? rec->k : s.k;
  std::vector<float>& v = rec ? rec->v : s.v;
  std::vector<float>& attn = rec ? rec->attn : s.attn;
  normed.resize(size_t(T * H));
  q.resize(size_t(T * qw));
  k.resize(size_t(T * kvw));
  v.resize(size_t(T * kvw));
  attn.resize(size_t(T * qw));
  s.proj.resize(size_t(T * H));

  if (rec) {
    rec->x_in.assign(x, x + T * H);
    rec->rstd.resize(size_t(T));
  }
  stream_norm(c, x, w.norm, w.norm_bias, T, normed.data(), rec ? rec->rstd.data() : nullptr);
  ops::matmul(w.q, normed.data(), T, q.data());  // [T, qw]
  ops::matmul(w.k, normed.data(), T, k.data());  // [T, kvw]
  ops::matmul(w.v, normed.data(), T, v.data());  // [T, kvw]
  add_bias(q.data(), T, qw, w.q_bias);
  add_bias(k.data(), T, kvw, w.k_bias);
  add_bias(v.data(), T, kvw, w.v_bias);

  const bool norm_before_rope = c.qk_norm == QkNorm::kPerHead || c.qk_norm == QkNorm::kFullWidth;
  if (norm_before_rope) {  // per head (hd values) or over the whole projection
    const int64_t qn = c.qk_norm == QkNorm::kPerHead ? hd : qw;
    const int64_t kn = c.qk_norm == QkNorm::kPerHead ? hd : kvw;
    if (rec) {
      rec->q_raw = q;
      rec->k_raw = k;
      rec->rstd_q.resize(size_t(T * qw / qn));
      rec->rstd_k.resize(size_t(T * kvw / kn));
    }
    ops::rmsnorm_rows(q.data(), w.q_norm, T * qw / qn, qn, eps, q.data(),
                      rec ? rec->rstd_q.data() : nullptr);
    ops::rmsnorm_rows(k.data(), w.k_norm, T * kvw / kn, kn, eps, k.data(),
                      rec ? rec->rstd_k.data() : nullptr);
  }
  if (c.clip_qkv > 0) {  // OLMoE clamps q, k (after their norm) and v
    if (rec) {
      rec->q_unclipped = q;
      rec->k_unclipped = k;
      rec->v_unclipped = v;
    }
    clamp_all(q.data(), q.size(), c.clip_qkv);
    clamp_all(k.data(), k.size(), c.clip_qkv);
    clamp_all(v.data(), v.size(), c.clip_qkv);
  }
  const int64_t rd = c.rope_dim();        // partial rotary: the first rd values of each head turn
  const bool rotates = c.rotates(layer);  // Llama 4's NoPE layers do not
  if (rotates) {
#pragma omp parallel for schedule(dynamic, 64) if (T >= 64)
    for (int64_t t = 0; t < T; ++t) {
      const float* cs = rope_cos + t * (rd / 2);
      const float* sn = rope_sin + t * (rd / 2);
      for (int64_t h = 0; h < c.num_heads; ++h)
        rope_head(q.data() + t * qw + h * hd, rd, cs, sn, c.rope_interleaved);
      for (int64_t h = 0; h < c.num_kv_heads; ++h)
        rope_head(k.data() + t * kvw + h * hd, rd, cs, sn, c.rope_interleaved);
    }
  }
  const bool l2 = c.qk_norm == QkNorm::kL2AfterRope && rotates;  // Llama 4: rotating layers
  if (c.qk_norm == QkNorm::kPerHeadAfterRope || l2) {  // Hunyuan: each rotated head normalised
    SY_ASSERT_MSG(!rec, "q/k norm after RoPE has no backward pass (the trainer refuses it)");
    if (l2) s.ones.assign(size_t(hd), 1.0f);
    ops::rmsnorm_rows(q.data(), l2 ? s.ones.data() : w.q_norm, T * c.num_heads, hd, eps, q.data(),
                      nullptr);
    ops::rmsnorm_rows(k.data(), l2 ? s.ones.data() : w.k_norm, T * c.num_kv_heads, hd, eps,
                      k.data(), nullptr);
  }
  if (!rotates && c.attn_temperature_scale > 0) {  // Llama 4's NoPE layers: query temperature
    SY_ASSERT_MSG(!rec, "attention temperature has no backward pass (the trainer refuses it)");
    int64_t row = 0;
    for (const SequenceChunk& ch : chunks)
      for (int64_t i = 0; i < int64_t(ch.tokens.size()); ++i, ++row) {
        const float pos = float(ch.cache->size() + i);
        const float scale = std::log(std::floor((pos + 1.0f) / c.attn_floor_scale) + 1.0f) *
                                c.attn_temperature_scale +
                            1.0f;
        ops::scale(scale, qw, q.data() + row * qw);
      }
  }

  if (rec) {  // whole sequences of equal length: batched, keeping the probabilities
    SY_ASSERT_MSG(!w.sinks && c.window(layer) == 0 && c.chunk(layer) == 0 && rotates,
                  "training has no sliding windows or attention sinks (the trainer refuses them)");
    const int64_t B = int64_t(chunks.size()), S = B > 0 ? T / B : 0;
    for (const SequenceChunk& ch : chunks)
      SY_ASSERT_MSG(ch.cache == nullptr && int64_t(ch.tokens.size()) == S,
                    "a recorded attention call takes whole sequences of equal length");
    const AttentionDims d{B, S, c.num_heads, c.num_kv_heads, hd, c.attention_scale()};
    rec->probs.resize(size_t(d.prob_size()));
    batched_causal_attention(d, q.data(), k.data(), v.data(), attn.data(), rec->probs.data());
  } else {  // append the new keys / values to each sequence's cache and attend
    AttentionShape shape{c.num_heads, c.num_kv_heads, hd, c.attention_scale(), c.window(layer),
                         0,           w.sinks};
    shape.chunk = c.chunk(layer);
    int64_t row = 0;
    for (const SequenceChunk& ch : chunks) {
      const int64_t n = int64_t(ch.tokens.size()), pos0 = ch.cache->size();
      float* kc = ch.cache->keys(layer);
      float* vc = ch.cache->values(layer);
      std::memcpy(kc + pos0 * kvw, k.data() + row * kvw, size_t(n * kvw) * 4);
      std::memcpy(vc + pos0 * kvw, v.data() + row * kvw, size_t(n * kvw) * 4);
      causal_attention(shape, q.data() + row * qw, n, pos0, kc, vc, attn.data() + row * qw);
      row += n;
    }
  }
  ops::matmul(w.o, attn.data(), T, s.proj.data());  // [T, H]
  add_bias(s.proj.data(), T, H, w.o_bias);
  if (c.residual_multiplier != 1.0f) ops::scale(c.residual_multiplier, T * H, s.proj.data());
  ops::add(s.proj.data(), T * H, x);
}

}  // namespace sy::model
