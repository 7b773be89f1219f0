// Training under mpirun: data parallelism for the dense weights (each rank takes its rows of
// every batch; gradients are all-reduced) and, optionally, expert parallelism for the routed
// experts (each rank owns, updates and keeps optimizer state for its experts only). Every
// rank's loss and gradient are its share of the whole batch's (TrainModel::set_parallel),
// so the sums equal a single process's run up to float rounding.
#pragma once

#include <cstdint>
#include <memory>

#include "parallel/communicator.h"
#include "train/checkpoint.h"
#include "train/expert_parallel_train.h"
#include "train/params.h"
#include "train/token_data.h"
#include "train/train_model.h"

namespace sy::train {

class ParallelTraining {
 public:
  // expert_parallel: experts owned by ranks (needs ranks <= experts); else all replicated.
  // ep: how the expert exchanges run (overlap, an emulated link).
  ParallelTraining(const parallel::Communicator& comm, ParamSet& params, int num_experts,
                   bool expert_parallel, parallel::EpOptions ep = {});

  int rank() const { return comm_.rank(); }
  int size() const { return comm_.size(); }
  bool root() const { return comm_.is_root(); }
  bool expert_parallel() const { return bool(ep_); }
  // The expert exchanges' timing (null without expert parallelism).
  ExpertParallelCompute* expert_compute() const { return ep_.get(); }

  // Wires the model to the other ranks (global statistics, remote experts).
  void attach(TrainModel& model);
  RowRange rows(int64_t batch_size) const { return rank_rows(batch_size, rank(), size()); }

  void reduce_gradients(ParamSet& params);                   // replicated params' grads summed
  double clip_grad_norm(ParamSet& params, double max_norm);  // global norm, as clip_grad_norm
  void sum_loss(LossParts& loss) const;                      // shares -> the batch's values
  void sum(std::vector<int64_t>& values) const { comm_.all_reduce_sum(values); }
  // The rank that keeps expert e's optimizer state and writes it into checkpoints (replicated
  // experts: spread round-robin).
  int expert_owner(int e) const;
  SaveComm save_comm() const;  // the ranks as a checkpoint save's participants

 private:
  bool owned_here(const Param& p) const;  // replicated, or an expert this rank owns
  int expert_of(const Param& p) const;

  const parallel::Communicator& comm_;
  std::unique_ptr<ExpertParallelCompute> ep_;
  std::vector<float> buffer_;
};

}  // namespace sy::train
