#include "model/layers.h"

#include "ops/elementwise.h"
#include "ops/matmul.h"
#include "ops/norm_rows.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::model {

void run_layers(const ModelConfig& c, std::span<const LayerView> layers,
                std::span<const SequenceChunk> chunks, int64_t T, const float* rope_cos,
                const float* rope_sin, float* x, LayerScratch& s, const moe::MoeRuntime& runtime,
                std::span<LayerRecord> records, PhaseTimes* times) {
  SY_ASSERT(records.empty() || records.size() == layers.size());
  const int64_t H = c.hidden_size;
  s.ffn_out.resize(size_t(T * H));
  for (size_t l = 0; l < layers.size(); ++l) {
    const LayerView& w = layers[l];
    LayerRecord* rec = records.empty() ? nullptr : &records[l];
    const int layer = int(l);
    PhaseTimer attention_time(times, "attention fwd");
    if (T > 0)
      attention_block(c, w.attention, layer, chunks, T, rope_cos, rope_sin, x, s.attention,
                      rec ? &rec->attention : nullptr);

    attention_time.stop();

    // FFN half: x += ffn(rmsnorm(x)).
    PhaseTimer ffn_time(times, w.is_moe ? "moe fwd" : "dense ffn fwd");
    std::vector<float>& ffn_in = rec ? rec->ffn_in : s.ffn_in;
    ffn_in.resize(size_t(T * H));
    if (rec) {
      rec->x_mid.assign(x, x + T * H);
      rec->rstd.resize(size_t(T));
    }
    ops::rmsnorm_rows(x, w.ffn_norm, T, H, c.rms_norm_eps, ffn_in.data(),
                      rec ? rec->rstd.data() : nullptr);
    if (w.is_moe)
      moe::moe_forward(w.moe, ffn_in.data(), T, H, s.ffn_out.data(), rec ? rec->moe : s.moe,
                       runtime, layer);
    else
      moe::ffn_forward(w.dense, ffn_in.data(), T, s.ffn_out.data(), rec ? rec->dense : s.ffn);
    ops::add(s.ffn_out.data(), T * H, x);
  }
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

void lm_head(const ModelConfig& c, const float* norm, const ops::WeightView& head, const float* x,
             int64_t T, std::span<const int64_t> rows, float* normed, float* rstd, float* logits) {
  const int64_t H = c.hidden_size;
  const int64_t n = rows.empty() ? T : int64_t(rows.size());
  if (rows.empty()) {
    ops::rmsnorm_rows(x, norm, T, H, c.rms_norm_eps, normed, rstd);
  } else {
    for (int64_t r = 0; r < n; ++r)
      ops::rmsnorm_rows(x + rows[size_t(r)] * H, norm, 1, H, c.rms_norm_eps, normed + r * H,
                        rstd ? rstd + r : nullptr);
  }
  ops::matmul(head, normed, n, logits);
}

}  // namespace sy::model
