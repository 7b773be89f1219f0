// Picks speculative decoding's draft length k from a cost model (SpecMoEOff's dynamic k),
// refitted after every step from what the run measures:
//   step time  T(k) = k t_draft + c0 + c1 N + c2 R(N),   N = b (k + 1) verified positions,
//   R(N) = G (1 - (1 - p)^N): the experts a forward call over N positions runs (G = layers x
//     experts; p fitted to the calls seen), which is what an offloaded model must read;
//   tokens     E(k) = b (1 - a^(k+1)) / (1 - a), a = the per-token acceptance measured;
// and k maximises E(k) / T(k) over 0 .. max_k (k = 0: a plain step, the draft idle). c0, c1, c2
// come from a least-squares fit of the verification calls' measured times; t_draft is the mean
// draft call. The first steps explore k = 0, 1, 2, 4 so the fit has points. Each step's predicted
// time is kept against its measured time.
#pragma once

#include <cstdint>
#include <vector>

namespace sy::model {

class DraftLengthModel {
 public:
  // max_k: the largest k to consider; expert_pairs: G (0 when experts are resident, and no
  // expert term is fitted).
  DraftLengthModel(int max_k, int64_t expert_pairs);

  int choose(int64_t batch);  // k for the next step (also records its predicted time)
  // What the step with `k` over `batch` sequences measured: draft seconds (all k calls), the
  // verification call's seconds and the experts it ran, tokens accepted (summed over the
  // sequences) and sequences whose proposal was rejected before its end.
  void record(int k, int64_t batch, double draft_s, double verify_s, int64_t experts_run,
              int64_t accepted, int64_t rejected);

  double acceptance() const;  // per draft token
  // Mean |predicted - measured| / measured over the steps the model (not exploration) chose.
  double mean_abs_error() const;
  int64_t predicted_steps() const { return int64_t(errors_.size()); }

 private:
  double predict(int k, int64_t batch) const;
  double experts_for(double positions) const;
  void fit();

  int max_k_;
  int64_t expert_pairs_;
  struct Call {
    double positions, experts, seconds;
  };
  std::vector<Call> calls_;
  double draft_s_ = 0;
  int64_t draft_calls_ = 0;
  int64_t accepted_ = 0, rejected_ = 0;
  double c0_ = 0, c1_ = 0, c2_ = 0, p_ = 0;
  int steps_ = 0;
  double pending_prediction_ = -1;
  std::vector<double> errors_;
};

}  // namespace sy::model
