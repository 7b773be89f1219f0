// Expert parallelism in training: each rank owns the experts that moe::Placement::contiguous
// gives it, the same placement inference uses (their weights, gradients and optimizer state).
// The forward is a round trip (parallel/round_trip.h): the rows routed to an expert travel to
// its owner, which runs the expert and records what its backward needs, and the outputs come
// home; the backward is another, with the output gradients out and the input gradients home,
// reusing the forward's layout (no counts exchange). With overlap on, the exchanges run in the
// background while the caller computes other operators (ScMoE's window, forward and backward).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/placement.h"
#include "parallel/communicator.h"
#include "parallel/round_trip.h"
#include "train/moe_grad.h"

namespace sy::train {

// One rank's exchange time in training, summed over the layers and calls since the last reset.
struct EpTrainTiming {
  double comm_s = 0;         // exchanges from start to completion
  double exposed_s = 0;      // of which the caller was blocked waiting
  int64_t calls = 0;         // round trips (forward and backward)
  int64_t remote_bytes = 0;  // rows to and from other ranks
};

class ExpertParallelCompute : public ExpertCompute {
 public:
  // options.link: an emulated interconnect every exchange takes at least the time of (reports
  // say so); options.overlap: non-blocking exchanges progressed in the background.
  ExpertParallelCompute(const parallel::Communicator& comm, int num_experts,
                        parallel::EpOptions options = {});

  void start(const moe::MoeBlock& block, int layer, const std::vector<int64_t>& offsets,
             const float* xe, int64_t hidden, float* ye) override;
  void progress(int layer) override { trips_.progress(layer); }
  void compute(int layer) override;
  void finish(int layer) override;
  moe::ExchangeEstimate estimate(int layer) const override;
  bool blocking() const override { return !trips_.options().overlap; }

  void backward_start(const MoeParams& p, int layer, const float* dye, float* dxe) override;
  void backward_progress(int layer) override { trips_.progress(layer); }
  void backward_compute(int layer) override;
  void backward_finish(int layer) override;
  moe::ExchangeEstimate backward_estimate(int layer) const override;

  // Which rank owns each expert (sy::Error at construction when ranks outnumber experts).
  const moe::Placement& placement() const { return placement_; }
  const EpTrainTiming& timing() const { return timing_; }

 private:
  struct Layer {
    const moe::MoeBlock* block = nullptr;
    const MoeParams* params = nullptr;
    float* out = nullptr;  // ye (forward) / dxe (backward), until finish
    int64_t hidden = 0;
    std::vector<int64_t> recv_counts;           // [peers, E] rows each peer sent for each expert
    std::vector<int64_t> send_rows, recv_rows;  // [peers]
    std::vector<int64_t> local_offsets;         // [my experts + 1] into xloc
    std::vector<int64_t> perm;                  // received row i -> row of xloc
    std::vector<float> xloc;                    // received rows, grouped by my experts
    std::vector<FfnActivations> act;            // [my experts]
    moe::ExchangeEstimate fwd_estimate, bwd_estimate;
  };
  Layer& layer_of(int layer);
  // The round trip's results home -> L.out; timings and the estimate of its direction.
  void complete(int layer, moe::ExchangeEstimate& estimate);

  const parallel::Communicator& comm_;
  moe::Placement placement_;
  parallel::RoundTrips trips_;
  int first_ = 0, num_mine_ = 0;  // my experts: [first_, first_ + num_mine_)
  std::vector<Layer> layers_;
  std::vector<float> grouped_, grouped_out_;  // rows grouped by my experts (compute steps)
  FfnActivations scratch_;
  EpTrainTiming timing_;
};

}  // namespace sy::train
