#include "moe/dispatch.h"

#include <algorithm>
#include <cstring>

#include "util/error.h"

namespace sy::moe {

namespace {

// Below this many floats a parallel region costs more than it saves (decode steps).
constexpr int64_t kParallelMin = 1 << 15;

// out[t] += w(row) * rows[row] over t's rows in ascending row (= expert) order.
template <bool kWeighted>
void sum_rows_per_token(const DispatchPlan& plan, const float* rows, int64_t H, float* out) {
  const int64_t T = plan.num_tokens(), S = plan.slots;
#pragma omp parallel if (T * S * H >= kParallelMin)
  {
    std::vector<int64_t> mine(static_cast<size_t>(S));  // this token's rows, ascending
#pragma omp for schedule(dynamic, 16)
    for (int64_t t = 0; t < T; ++t) {
      int64_t n = 0;
      for (int64_t j = 0; j < S; ++j) {
        const int64_t r = plan.row_of[size_t(t * S + j)];
        if (r < 0) continue;
        int64_t i = n++;  // insertion sort: a token has few pairs
        while (i > 0 && mine[size_t(i - 1)] > r) mine[size_t(i)] = mine[size_t(i - 1)], --i;
        mine[size_t(i)] = r;
      }
      float* o = out + t * H;
      for (int64_t i = 0; i < n; ++i) {
        const float* y = rows + mine[size_t(i)] * H;
        if constexpr (kWeighted) {
          const float w = plan.weight[size_t(mine[size_t(i)])];
          for (int64_t h = 0; h < H; ++h) o[h] += w * y[h];
        } else {
          for (int64_t h = 0; h < H; ++h) o[h] += y[h];
        }
      }
    }
  }
}

}  // namespace

void plan_dispatch(const int32_t* ids, const float* weights, int64_t num_tokens, int top_k,
                   int num_experts, DispatchPlan& plan) {
  plan.num_experts = num_experts;
  plan.slots = top_k;
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
  plan.slot.resize(size_t(rows));
  plan.weight.resize(size_t(rows));
  plan.row_of.assign(size_t(num_pairs), -1);
  std::vector<int64_t> cursor(plan.offsets.begin(), plan.offsets.end() - 1);
  for (int64_t p = 0; p < num_pairs; ++p) {
    const int32_t e = ids[p];
    if (e == kDroppedExpert) continue;
    const int64_t row = cursor[size_t(e)]++;
    plan.token[size_t(row)] = int32_t(p / top_k);
    plan.slot[size_t(row)] = int32_t(p % top_k);
    plan.weight[size_t(row)] = weights[p];
    plan.row_of[size_t(p)] = row;
  }
}

void gather_rows(const DispatchPlan& plan, const float* x, int64_t H, float* permuted) {
  const int64_t rows = plan.num_rows();
#pragma omp parallel for schedule(static) if (rows * H >= kParallelMin)
  for (int64_t r = 0; r < rows; ++r) {
    const float* src = x + int64_t(plan.token[size_t(r)]) * H;
    float* dst = permuted + r * H;
    if (!plan.scale_inputs) {
      std::memcpy(dst, src, size_t(H) * 4);
      continue;
    }
    const float w = plan.weight[size_t(r)];
    for (int64_t i = 0; i < H; ++i) dst[i] = src[i] * w;
  }
}

void combine_rows(const DispatchPlan& plan, const float* expert_out, int64_t H, float* out) {
  if (plan.scale_inputs)
    sum_rows_per_token<false>(plan, expert_out, H, out);
  else
    sum_rows_per_token<true>(plan, expert_out, H, out);
}

void scatter_add_rows(const DispatchPlan& plan, const float* rows, int64_t H, float* out) {
  sum_rows_per_token<false>(plan, rows, H, out);
}

}  // namespace sy::moe
