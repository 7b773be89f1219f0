#include "model/mla_attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "model/rope.h"
#include "ops/elementwise.h"
#include "ops/gemm.h"
#include "ops/matmul.h"
#include "ops/norm_rows.h"
#include "util/error.h"

namespace sy::model {

namespace {

constexpr int64_t kQueryBlock = 64;
// DeepSeek's q_a_layernorm / kv_a_layernorm are built without the config's eps: 1e-6 always.
constexpr float kLatentNormEps = 1e-6f;

void add_bias(float* x, int64_t rows, int64_t n, const std::vector<float>& bias) {
  if (bias.empty()) return;
  for (int64_t r = 0; r < rows; ++r) ops::add(bias.data(), n, x + r * n);
}

}  // namespace

void mla_attention(const ModelConfig& c, const MlaWeights& w, int layer,
                   std::span<const SequenceChunk> chunks, int64_t T, const float* normed,
                   const float* rope_cos, const float* rope_sin, float* out, MlaScratch& s) {
  const MlaConfig& m = c.mla;
  const int64_t nh = c.num_heads, qk = m.qk_head_dim(), nope = m.qk_nope_dim, rd = m.qk_rope_dim;
  const int64_t kvr = m.kv_lora_rank, lw = m.latent_width(), vd = m.v_head_dim;
  const int64_t qw = nh * qk, ow = nh * vd, kvb_rows = nope + vd;  // kv_b rows per head

  // Queries.
  s.q.resize(size_t(T * qw));
  if (m.q_lora_rank > 0) {
    s.qa.resize(size_t(T * m.q_lora_rank));
    ops::matmul(w.q_a, normed, T, s.qa.data());
    add_bias(s.qa.data(), T, m.q_lora_rank, w.q_a_bias);
    ops::rmsnorm_rows(s.qa.data(), w.q_a_norm.data(), T, m.q_lora_rank, kLatentNormEps,
                      s.qa.data());
    ops::matmul(w.q_b, s.qa.data(), T, s.q.data());
  } else {
    ops::matmul(w.q, normed, T, s.q.data());
  }
  // The latent and the rotary key: [c | k_rope] per token, as the cache stores them.
  s.kva.resize(size_t(T * lw));
  ops::matmul(w.kv_a, normed, T, s.kva.data());
  add_bias(s.kva.data(), T, lw, w.kv_a_bias);
  for (int64_t t = 0; t < T; ++t) {
    float* row = s.kva.data() + t * lw;
    ops::rmsnorm_rows(row, w.kv_a_norm.data(), 1, kvr, kLatentNormEps, row);
    const float* cs = rope_cos + t * (rd / 2);
    const float* sn = rope_sin + t * (rd / 2);
    rope_head(row + kvr, rd, cs, sn, m.interleaved_rope);
    for (int64_t h = 0; h < nh; ++h)
      rope_head(s.q.data() + t * qw + h * qk + nope, rd, cs, sn, m.interleaved_rope);
  }

  // Scale: 1 / sqrt(qk_head_dim), times YaRN's mscale^2 with mscale_all_dim (DeepSeek-V3's
  // long-context correction, from the factor as written).
  float scale = 1.0f / std::sqrt(float(qk));
  if (const RopeScaling& y = c.rope_scaling; y.yarn && y.mscale_all_dim != 0) {
    const double m = yarn_mscale(y.factor, y.mscale_all_dim);
    scale = float(double(scale) * m * m);
  }
  const float* kv_b = w.kv_b_data();
  int64_t row0 = 0;
  for (const SequenceChunk& ch : chunks) {
    const int64_t n = int64_t(ch.tokens.size()), pos0 = ch.cache->size();
    float* cache = ch.cache->keys(layer);
    std::memcpy(cache + pos0 * lw, s.kva.data() + row0 * lw, size_t(n * lw) * sizeof(float));
    const float* q = s.q.data() + row0 * qw;
    float* o = out + row0 * ow;
    const int64_t blocks = (n + kQueryBlock - 1) / kQueryBlock;
#pragma omp parallel
    {
      std::vector<float> qcat, P, olat;
#pragma omp for schedule(dynamic, 1)
      for (int64_t task = 0; task < nh * blocks; ++task) {
        const int64_t h = task / blocks, r0 = (task % blocks) * kQueryBlock;
        const int64_t r1 = std::min(n, r0 + kQueryBlock), rows = r1 - r0, keys = pos0 + r1;
        const float* w_uk = kv_b + h * kvb_rows * kvr;  // [nope, kvr]
        const float* w_uv = w_uk + nope * kvr;          // [vd, kvr]
        // [q_nope W_UK_h | q_rope] against the cached [c | k_rope]: one product for both terms.
        qcat.resize(size_t(rows * lw));
        ops::sgemm(ops::Trans::kNo, ops::Trans::kNo, rows, kvr, nope, 1.0f, q + r0 * qw + h * qk,
                   qw, w_uk, kvr, 0.0f, qcat.data(), lw);
        for (int64_t i = 0; i < rows; ++i)
          std::memcpy(qcat.data() + i * lw + kvr, q + (r0 + i) * qw + h * qk + nope,
                      size_t(rd) * sizeof(float));
        P.resize(size_t(rows * keys));
        ops::sgemm(ops::Trans::kNo, ops::Trans::kYes, rows, keys, lw, scale, qcat.data(), lw, cache,
                   lw, 0.0f, P.data(), keys);
        for (int64_t i = 0; i < rows; ++i) {
          float* p = P.data() + i * keys;
          const int64_t len = pos0 + r0 + i + 1;
          ops::softmax(p, len);
          std::fill(p + len, p + keys, 0.0f);
        }
        olat.resize(size_t(rows * kvr));  // P c: the weighted latent
        ops::sgemm(ops::Trans::kNo, ops::Trans::kNo, rows, kvr, keys, 1.0f, P.data(), keys, cache,
                   lw, 0.0f, olat.data(), kvr);
        ops::sgemm(ops::Trans::kNo, ops::Trans::kYes, rows, vd, kvr, 1.0f, olat.data(), kvr, w_uv,
                   kvr, 0.0f, o + r0 * ow + h * vd, ow);
      }
    }
    row0 += n;
  }
}

}  // namespace sy::model
