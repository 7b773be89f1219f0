// Dispatch and combine: permute the (token, expert) pairs so each expert's rows are
// contiguous, and scatter the expert outputs back weighted. A pair whose expert id is
// kDroppedExpert (set by a capacity policy) is skipped by both, with no special path.
// Inference and training share these: training keeps the plan for its backward pass.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sy::moe {

constexpr int32_t kDroppedExpert = -1;

// The permutation for one layer call. Rows of expert e are [offsets[e], offsets[e+1]).
struct DispatchPlan {
  int num_experts = 0;
  int slots = 0;                 // pairs per token (top_k, or more after expanded drop)
  std::vector<int64_t> offsets;  // [E + 1]
  std::vector<int32_t> token;    // [rows] source token of each permuted row
  std::vector<int32_t> slot;     // [rows] its slot j in ids[token, j]
  std::vector<float> weight;     // [rows] combine weight of each permuted row
  std::vector<int64_t> row_of;   // [tokens, slots] row of each pair, -1 when dropped
  // Llama 4: the weight scales each row's input (gather_rows), and combine_rows adds the
  // expert outputs unweighted.
  bool scale_inputs = false;
  int64_t num_rows() const { return offsets.empty() ? 0 : offsets.back(); }
  int64_t num_tokens() const { return slots == 0 ? 0 : int64_t(row_of.size()) / slots; }
  int64_t rows_of(int e) const { return offsets[size_t(e) + 1] - offsets[size_t(e)]; }
};

// ids / weights: [num_tokens, top_k]. Within an expert, rows keep token order.
void plan_dispatch(const int32_t* ids, const float* weights, int64_t num_tokens, int top_k,
                   int num_experts, DispatchPlan& plan);

// x: [num_tokens, H] -> permuted: [rows, H] (times each row's weight with scale_inputs)
void gather_rows(const DispatchPlan& plan, const float* x, int64_t H, float* permuted);

// out[token] += weight * expert_out[row] (weight 1 with scale_inputs), experts in ascending order
// (as the Hugging Face reference accumulates with index_add_). out must be initialised by the
// caller. Tokens run in parallel; each one's sum has the same order whatever the thread count.
void combine_rows(const DispatchPlan& plan, const float* expert_out, int64_t H, float* out);

// The adjoint of gather_rows: out[token] += rows[row] (same order as combine_rows).
void scatter_add_rows(const DispatchPlan& plan, const float* rows, int64_t H, float* out);

}  // namespace sy::moe
