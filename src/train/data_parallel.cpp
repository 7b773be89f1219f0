#include "train/data_parallel.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "train/adamw.h"
#include "util/error.h"

namespace sy::train {

ParallelTraining::ParallelTraining(const parallel::Communicator& comm, ParamSet& params,
                                   int num_experts, bool expert_parallel, parallel::EpOptions ep)
    : comm_(comm) {
  if (expert_parallel && comm.size() > 1) {
    if (num_experts == 0) fail("expert parallelism needs a MoE model (this one has no experts)");
    ep_ = std::make_unique<ExpertParallelCompute>(comm, num_experts, ep);
    // Experts owned elsewhere: no update, no optimizer state, no weight decay here.
    for (Param& p : params.all())
      if (p.expert && ep_->placement().device_of(expert_of(p)) != comm.rank()) p.trainable = false;
  }
}

int ParallelTraining::expert_of(const Param& p) const {
  const size_t at = p.name.find(".experts.");
  if (at == std::string::npos) fail("'{}' is marked as an expert but names none", p.name);
  return std::stoi(p.name.substr(at + 9));
}

bool ParallelTraining::owned_here(const Param& p) const {
  return !ep_ || !p.expert || ep_->placement().device_of(expert_of(p)) == comm_.rank();
}

void ParallelTraining::attach(TrainModel& model) {
  const parallel::Communicator* comm = &comm_;
  model.set_parallel([comm](std::vector<int64_t>& v) { comm->all_reduce_sum(v); }, ep_.get());
}

void ParallelTraining::reduce_gradients(ParamSet& params) {
  // One all-reduce over every replicated gradient packed together.
  size_t n = 0;
  for (const Param& p : params.all())
    if (!(ep_ && p.expert)) n += p.grad.size();
  buffer_.resize(n);
  size_t at = 0;
  for (const Param& p : params.all())
    if (!(ep_ && p.expert)) {
      std::memcpy(buffer_.data() + at, p.grad.data(), p.grad.size() * 4);
      at += p.grad.size();
    }
  comm_.all_reduce_sum(buffer_.data(), n);
  at = 0;
  for (Param& p : params.all())
    if (!(ep_ && p.expert)) {
      std::memcpy(p.grad.data(), buffer_.data() + at, p.grad.size() * 4);
      at += p.grad.size();
    }
}

double ParallelTraining::clip_grad_norm(ParamSet& params, double max_norm) {
  // Replicated gradients are equal everywhere: count them once; owned experts: sum over ranks.
  const bool ep = bool(ep_);
  const double replicated =
      grad_sum_squares(params, [ep](const Param& p) { return !(ep && p.expert); });
  std::vector<double> experts{ep ? grad_sum_squares(params, [](const Param& p) { return p.expert; })
                                 : 0.0};
  comm_.all_reduce_sum(experts);
  const double norm = std::sqrt(replicated + experts[0]);
  clip_grads_to_norm(params, norm, max_norm);
  return norm;
}

void ParallelTraining::sum_loss(LossParts& loss) const {
  std::vector<double> v{loss.total, loss.ce, loss.aux, loss.z};
  comm_.all_reduce_sum(v);
  loss.total = v[0];
  loss.ce = v[1];
  loss.aux = v[2];
  loss.z = v[3];
}

int ParallelTraining::expert_owner(int e) const {
  return ep_ ? ep_->placement().device_of(e) : e % comm_.size();
}

SaveComm ParallelTraining::save_comm() const {
  const parallel::Communicator* comm = &comm_;
  SaveComm c;
  c.rank = comm_.rank();
  c.size = comm_.size();
  c.gather = [comm](const std::string& s) { return comm->gather_strings(s); };
  c.broadcast = [comm](std::string& s) { comm->broadcast(s); };
  return c;
}

}  // namespace sy::train
