#include "moe/dispatch.h"

#include <cstring>

#include "util/error.h"

namespace sy::moe {

void plan_dispatch(const int32_t* ids, const float* weights, int64_t num_tokens, int top_k,
                   int num_experts, DispatchPlan& plan) {
  plan.num_experts = num_experts;
  plan.offsets.assign(size_t(num_experts) + 1, 0);
  const int64_t num_pairs = num_tokens * top_k;
  for (int64_t p = 0; p < num_pairs; ++p) {
    const int32_t e = ids[p];
    if (e == kDroppedExpert) continue;
    SY_ASSERT(e >= 0 && e < num_experts);
    ++plan.offsets[size_t(e) + 1];
  }
  for (int e = 0; e < num_experts; ++e) plan.offsets[size_t(e) + 1] += plan.offsets[size_t(e)];
  const int64_t rows = plan.offsets.back();
  plan.token.resize(size_t(rows));
  plan.weight.resize(size_t(rows));
  std::vector<int64_t> cursor(plan.offsets.begin(), plan.offsets.end() - 1);
  for (int64_t p = 0; p < num_pairs; ++p) {
    const int32_t e = ids[p];
    if (e == kDroppedExpert) continue;
    const int64_t row = cursor[size_t(e)]++;
    plan.token[size_t(row)] = int32_t(p / top_k);
    plan.weight[size_t(row)] = weights[p];
  }
}

void gather_rows(const DispatchPlan& plan, const float* x, int64_t H, float* permuted) {
  const int64_t rows = plan.num_rows();
  for (int64_t r = 0; r < rows; ++r)
    std::memcpy(permuted + r * H, x + int64_t(plan.token[size_t(r)]) * H, size_t(H) * 4);
}

void combine_rows(const DispatchPlan& plan, const float* expert_out, int64_t H, float* out) {
  const int64_t rows = plan.num_rows();
  for (int64_t r = 0; r < rows; ++r) {
    const float w = plan.weight[size_t(r)];
    const float* y = expert_out + r * H;
    float* o = out + int64_t(plan.token[size_t(r)]) * H;
    for (int64_t i = 0; i < H; ++i) o[i] += w * y[i];
  }
}

}  // namespace sy::moe
