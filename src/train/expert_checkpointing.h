// Partial experts checkpointing (PEC, from MoC-System, Cai, Qin, Huang, ASPLOS'25): which
// tensors each rank writes at each checkpoint, and the bookkeeping of what a fault loses.
//
// Every checkpoint saves all non-expert state, sharded across ranks by layer (greedily, largest
// layer to the least-loaded rank, counting the experts each rank saves; fixed at start-up), plus
// K of the N experts of every MoE layer, each written by the rank that owns it (weights and AdamW
// moments). Sequential selection rotates through the experts, staggered across layers so the
// ranks' shares stay even: layer j (j-th MoE layer) at checkpoint c saves experts
// (c + j) * K + i mod N, i < K. Load-aware selection saves the K experts with the most token-slots
// since their last save. An expert never saved yet is always saved, so the first checkpoint is
// full; so is the last of a session (a planned stop loses nothing).
//
// Proportion of Lost Tokens: the token-slots an expert processed after its last durable save are
// lost when a fault makes the run restart from a checkpoint that does not hold it. Over faults j
// and MoE layers i: PLT = 1/N_moe * sum_i sum_j L_ij / (T_i * top_k), with T_i the run's tokens
// (steps x batch x seq). Dynamic K: after a recovery that leaves PLT above the threshold, K
// doubles (up to N).
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "model/config.h"
#include "train/checkpoint.h"
#include "train/params.h"

namespace sy::train {

struct PecConfig {
  int k = 0;                      // experts saved per MoE layer per checkpoint (0: all of them)
  bool load_aware = false;        // most unsaved token-slots first, instead of rotating
  double plt_threshold = 0.0375;  // dynamic K: the paper's accuracy-neutral PLT
  bool dynamic_k = true;
};

// What a recovery lost: token-slots per MoE layer and the PLT they add.
struct Recovery {
  std::vector<int64_t> lost_slots;  // per MoE layer
  double plt_added = 0, plt_total = 0;
  int k_before = 0, k_after = 0;
};

class ExpertCheckpointing {
 public:
  // owner(e): the rank that holds expert e's optimizer state (and writes it). slots_per_layer: the
  // run's token-slots per MoE layer, steps * batch * seq * top_k (PLT's denominator).
  ExpertCheckpointing(PecConfig config, const model::ModelConfig& model, const ParamSet& params,
                      int rank, int ranks, std::function<int(int expert)> owner,
                      double slots_per_layer);

  // Token-slots routed to each expert of `layer` in one step (global counts).
  void count(int layer, const std::vector<int64_t>& counts);

  // The experts of each MoE layer the next checkpoint saves; full: all of them.
  std::vector<std::vector<int>> select(bool full) const;
  // This rank's shard groups for that selection.
  std::vector<ShardGroup> groups(const std::vector<std::vector<int>>& selection) const;
  // The bookkeeping as it will be once that checkpoint at `step` commits (for its manifest).
  nlohmann::json state_after(const std::vector<std::vector<int>>& selection, int64_t step) const;
  // The checkpoint committed: its experts' unsaved counts restart at zero.
  void committed(const std::vector<std::vector<int>>& selection, int64_t step);

  // Restores the bookkeeping of the checkpoint a run resumes from (its "pec" state); every
  // expert it did not hold in its newest state lost its unsaved token-slots.
  Recovery recover(const nlohmann::json& state);

  int k() const { return k_; }
  int num_experts() const { return num_experts_; }
  double plt() const { return plt_; }
  const std::vector<int>& moe_layers() const { return moe_layers_; }

 private:
  PecConfig config_;
  int rank_, ranks_, num_experts_, k_;
  double slots_per_layer_;
  std::vector<int> moe_layers_;  // layer index of each MoE layer
  std::function<int(int)> owner_;
  // Param names: per MoE layer, per expert; and this rank's share of the rest.
  std::vector<std::vector<std::vector<std::string>>> expert_names_;
  std::vector<std::string> dense_names_;
  int64_t saves_ = 0;                           // checkpoints so far (sequential rotation)
  std::vector<std::vector<int64_t>> unsaved_;   // [MoE layer][expert] slots since last save
  std::vector<std::vector<int64_t>> saved_at_;  // [MoE layer][expert] step, -1: never
  double plt_ = 0;
  int64_t lost_total_ = 0, recoveries_ = 0;
};

}  // namespace sy::train
