// Expert parallelism in training: each rank owns the experts that moe::Placement::contiguous
// gives it, the same placement inference uses (their weights, gradients and optimizer state); the
// rows routed to an expert travel to its owner with one all-to-all, come back as outputs with a
// second, and the backward pass does the same with the output gradients and input gradients.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/placement.h"
#include "parallel/all_to_all.h"
#include "parallel/communicator.h"
#include "parallel/link_model.h"
#include "train/moe_grad.h"

namespace sy::train {

class ExpertParallelCompute : public ExpertCompute {
 public:
  // link: an emulated interconnect every exchange takes at least the time of (reports say so).
  ExpertParallelCompute(const parallel::Communicator& comm, int num_experts,
                        parallel::LinkModel link = {});

  void forward(const moe::MoeBlock& block, int layer, const std::vector<int64_t>& offsets,
               const float* xe, int64_t hidden, float* ye) override;
  void backward(const MoeParams& p, int layer, const std::vector<int64_t>& offsets,
                const float* dye, int64_t hidden, float* dxe) override;

  // Which rank owns each expert (sy::Error at construction when ranks outnumber experts).
  const moe::Placement& placement() const { return placement_; }

 private:
  struct Layer {
    std::vector<int64_t> recv_counts;           // [peers, E] rows each peer sent for each expert
    std::vector<int64_t> send_rows, recv_rows;  // [peers]
    std::vector<int64_t> local_offsets;         // [my experts + 1] into xloc
    std::vector<int64_t> perm;                  // received row i -> row of xloc
    std::vector<float> xloc;                    // received rows, grouped by my experts
    std::vector<FfnActivations> act;            // [my experts]
  };
  // Rows arriving peer-major -> expert-major (and back) for this layer's plan.
  void exchange(const float* send, const std::vector<int64_t>& send_rows, std::vector<float>& recv,
                const std::vector<int64_t>& recv_rows, int64_t width);

  const parallel::Communicator& comm_;
  moe::Placement placement_;
  parallel::LinkModel link_;
  int first_ = 0, num_mine_ = 0;  // my experts: [first_, first_ + num_mine_)
  std::vector<Layer> layers_;
  parallel::RowExchange xchg_;
  FfnActivations scratch_;
};

}  // namespace sy::train
