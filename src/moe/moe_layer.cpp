#include "moe/moe_layer.h"

#include <algorithm>
#include <cmath>

#include "ops/matmul.h"

namespace sy::moe {

void moe_forward(const MoeBlock& b, const float* x, int64_t T, int64_t H, float* out,
                 MoeScratch& s, LoadStats* stats, int layer) {
  const RouterConfig& rc = *b.router;
  const int E = rc.num_experts, K = rc.top_k;
  std::fill(out, out + T * H, 0.0f);
  if (T == 0) return;

  // 1. Router: logits [T, E] in float32, then top-k ids and weights.
  s.logits.resize(size_t(T * E));
  ops::sgemm_nt(T, E, H, x, H, b.router_weight, H, s.logits.data(), E);
  s.ids.resize(size_t(T * K));
  s.weights.resize(size_t(T * K));
  route(rc, s.logits.data(), T, b.selection_bias, s.ids.data(), s.weights.data());

  // 2. Dispatch: each expert's rows contiguous.
  plan_dispatch(s.ids.data(), s.weights.data(), T, K, E, s.plan);
  s.permuted.resize(size_t(s.plan.num_rows() * H));
  s.expert_out.resize(s.permuted.size());
  gather_rows(s.plan, x, H, s.permuted.data());

  // 3. Expert FFNs, one grouped matmul chain per expert over its rows.
  for (int e = 0; e < E; ++e) {
    const int64_t begin = s.plan.offsets[size_t(e)], rows = s.plan.rows_of(e);
    if (stats) stats->add(layer, e, rows);
    if (rows == 0) continue;
    ffn_forward(b.experts[size_t(e)], s.permuted.data() + begin * H, rows,
                s.expert_out.data() + begin * H, s.ffn);
  }

  // 4. Combine: weighted scatter-add back to token order.
  combine_rows(s.plan, s.expert_out.data(), H, out);

  // 5. Shared expert(s), optionally gated per token.
  if (b.shared) {
    s.shared_out.resize(size_t(T * H));
    ffn_forward(*b.shared, x, T, s.shared_out.data(), s.ffn);
    for (int64_t t = 0; t < T; ++t) {
      float g = 1.0f;
      if (b.shared_gate) {
        double dot = 0;
        for (int64_t i = 0; i < H; ++i) dot += double(b.shared_gate[i]) * x[t * H + i];
        g = 1.0f / (1.0f + std::exp(-float(dot)));
      }
      for (int64_t i = 0; i < H; ++i) out[t * H + i] += g * s.shared_out[size_t(t * H + i)];
    }
  }
}

}  // namespace sy::moe
