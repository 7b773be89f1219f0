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
// doubles (up to N). With node-local snapshots (two-level), an expert restored from its snapshot
// loses only the token-slots since that snapshot.
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
  // Two-level checkpointing: experts per MoE layer also copied to node-local memory at each
  // checkpoint (0: none); the persisted ones (k) are among them.
  int snapshot_k = 0;
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
  // The experts of each MoE layer that go to node-local memory with that selection: the
  // persisted ones and the next ones in the rotation, snapshot_k per layer (none without).
  std::vector<std::vector<int>> select_snapshot(
      const std::vector<std::vector<int>>& persisted) const;
  // This rank's shard groups for that selection.
  std::vector<ShardGroup> groups(const std::vector<std::vector<int>>& selection) const;
  // The bookkeeping as it will be once that checkpoint at `step` commits (for its manifest).
  nlohmann::json state_after(const std::vector<std::vector<int>>& selection,
                             const std::vector<std::vector<int>>& snapshot, int64_t step) const;
  // The checkpoint committed: its experts' unsaved counts restart at zero.
  void committed(const std::vector<std::vector<int>>& selection,
                 const std::vector<std::vector<int>>& snapshot, int64_t step);

  // Recovery, in two steps: restore the bookkeeping of the checkpoint a run resumes from (its
  // "pec" state; null for a checkpoint without one), then account the loss: every expert the
  // checkpoint did not hold in its newest state lost its token-slots since its last save, or
  // only since its snapshot where from_snapshot[j][e] (restored from node memory).
  void restore_state(const nlohmann::json& state);
  Recovery recover(const std::vector<std::vector<bool>>& from_snapshot = {});
  Recovery restore_and_recover(const nlohmann::json& state) {
    restore_state(state);
    return recover();
  }

  // The step of expert e of the j-th MoE layer's newest durable save and snapshot (-1: none).
  int64_t saved_step(size_t j, int e) const { return saved_at_[j][size_t(e)]; }
  int64_t snapshot_step(size_t j, int e) const { return snapshot_at_[j][size_t(e)]; }
  std::string stem(size_t j, int e) const;
  const std::vector<std::string>& expert_params(size_t j, int e) const {
    return expert_names_[j][size_t(e)];
  }
  int owner(int e) const { return owner_(e); }

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
  std::vector<std::vector<int64_t>> unsaved_snap_, snapshot_at_;  // the same for snapshots
  bool has_state_ = false;  // restore_state found a "pec" state
  double plt_ = 0;
  int64_t lost_total_ = 0, recoveries_ = 0;
};

}  // namespace sy::train
