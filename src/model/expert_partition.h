// Expert partition (DualSparse-MoE, papers.md section 6): every routed expert's FFN neurons are
// split into P sub-experts of width I / P, written as a normal checkpoint of the same family
// that computes the same function, so everything that runs the original runs the result.
//
// Complete transformation: each router row (and selection bias) is repeated P times and the
// model routes top-(K * P), so an unmodified MoE runtime picks all P sub-experts of each
// expert it would have picked. Each copy's weight is the original's divided by P when the
// weights come from a softmax or are renormalised over the selected experts (the P copies
// share what the expert had), and unchanged for raw sigmoid weights; the sub-experts' down
// projections are multiplied by that divisor, so the sum over an expert's sub-experts is the
// expert's output. Group-limited routing is refused: repeating experts changes group scores.
//
// Partial transformation (partial = true): the gate is kept and the model routes top-K whole
// experts as before; each selected expert then routes to all its P parts with the expert's own
// weight (RouterConfig::expand_parts), so the down projections are not scaled. It works with
// group-limited routing, and is not trainable (its gate routes experts, not parts).
//
// Either is reversible: merge_experts puts every neuron back where it was (the neuron order of
// a reconstruction is saved beside the weights, expert_partition.safetensors), byte for byte
// when the down projections were scaled by a power of two or not at all.
//
// Scaling by P is exact in any float format when P is a power of two; otherwise the scaled
// down projections are rounded to the checkpoint's dtype (BF16: relative error up to 2^-9).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::model {

struct PartitionOptions {
  int factor = 2;        // P: sub-experts per expert
  bool partial = false;  // the partial transformation (keep the gate) instead of the complete
  // Optional neuron order per MoE layer and expert ([layer][expert] -> a permutation of the
  // expert's I neurons; empty: natural order). Sub-expert p takes neurons order[p I/P ..
  // (p+1) I/P): with neurons sorted by importance, sub-expert 0 is the major part (expert
  // reconstruction).
  std::vector<std::vector<std::vector<int32_t>>> neuron_order;
};

struct PartitionSummary {
  int64_t experts_before = 0, experts_after = 0;  // per MoE layer
  int64_t top_k_before = 0, top_k_after = 0;
  int64_t width_before = 0, width_after = 0;
  float down_scale = 1.0f;  // what each sub-expert's down projection was multiplied by
  int64_t moe_layers = 0;
  int64_t tensors_written = 0;
};

// Reads the checkpoint in `model_dir` and writes the partitioned one to `out_dir`, which must
// not exist yet: everything is written to a temporary folder beside it and renamed at the end,
// so a failure never leaves a half-written model. Non-weight files (tokenizer, generation
// config) are copied. sy::Error naming the problem for a factor that does not divide the
// expert width, a model without routed experts, group-limited routing, or a bad order.
PartitionSummary partition_experts(const std::string& model_dir, const std::string& out_dir,
                                   const PartitionOptions& options);

// The inverse: a partitioned checkpoint (either transformation) back to whole experts, written
// to `out_dir` the same all-or-nothing way. sy::Error for a model that is not partitioned, a
// complete partition whose repeated gate rows no longer agree (it was changed, e.g. trained,
// after the partition), or a reconstruction whose saved neuron order is missing or invalid.
PartitionSummary merge_experts(const std::string& model_dir, const std::string& out_dir);

// Pads every routed expert with zero neurons up to `width`, written the same all-or-nothing
// way: the same function (a zero neuron's gate, up and down rows are zero, so it adds nothing;
// only float summation order changes), more bytes and FLOPs per expert. A trained model grown
// to a large model's expert bytes, for offloading studies where a random-weight model would
// make a draft's acceptance meaningless (bench/specmoeoff.sh). sy::Error for a width not above
// the current one, a partitioned model, or a model without routed experts.
PartitionSummary pad_experts(const std::string& model_dir, const std::string& out_dir,
                             int64_t width);

}  // namespace sy::model
