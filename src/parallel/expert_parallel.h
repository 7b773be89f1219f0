// Expert parallelism: each rank owns some experts (a Placement over ranks) and its own tokens.
// At every MoE layer a rank routes its tokens and applies the capacity policy locally (done by
// moe_forward), then this backend sends each surviving pair's row to the expert's owner with
// an all-to-all, the owners run their experts over everything they received, and a second
// all-to-all brings the outputs home for the weighted combine.
#pragma once

#include <cstdint>
#include <vector>

#include "moe/moe_layer.h"
#include "moe/placement.h"
#include "parallel/all_to_all.h"
#include "parallel/communicator.h"

namespace sy::parallel {

// Where one rank's time in one MoE layer went, summed over calls.
struct EpLayerTiming {
  double route_s = 0;          // router + capacity policy (measured by moe_forward)
  double dispatch_s = 0;       // pack rows + counts exchange + row all-to-all
  double wait_dispatch_s = 0;  //   of which blocked in the counts exchange (peers arriving late)
  double compute_s = 0;        // this rank's experts over the rows it received
  double combine_s = 0;        // return all-to-all + weighted scatter-add
  double wait_combine_s = 0;   //   of which blocked in the return all-to-all (slowest owner)
  double alltoall_s = 0;       // inside MPI only: counts + rows there + rows back
  int64_t calls = 0;
  int64_t rows_sent = 0, rows_received = 0;  // rows leaving / arriving (self included)
  int64_t bytes_sent_remote = 0;             // bytes to other ranks, both directions' sends
};

// Rows of expert e that this rank computes come from every peer; a row's payload is
// `hidden` floats. `compute` is replaceable so tests can check the exchange on
// self-describing rows; the default runs the expert FFN.
class ExpertParallelBackend : public moe::ExpertBackend {
 public:
  ExpertParallelBackend(const Communicator& comm, moe::Placement placement, int num_layers,
                        bool nonblocking = false);

  void run(const moe::MoeBlock& block, const moe::RoutedPairs& pairs, moe::MoeScratch& scratch,
           float* out) override;

  const moe::Placement& placement() const { return placement_; }
  const std::vector<EpLayerTiming>& timings() const { return timings_; }
  void reset_timings();

  // Test hook: replaces the expert computation (rows [n, H] of local expert `expert`).
  using ComputeFn = void (*)(int expert, const float* rows, int64_t n, int64_t hidden, float* out,
                             void* context);
  void set_compute_for_tests(ComputeFn fn, void* context) {
    compute_fn_ = fn, compute_ctx_ = context;
  }

 private:
  const Communicator& comm_;
  moe::Placement placement_;
  bool nonblocking_;
  std::vector<EpLayerTiming> timings_;
  ComputeFn compute_fn_ = nullptr;
  void* compute_ctx_ = nullptr;
  // Reused buffers.
  moe::DispatchPlan plan_;
  std::vector<int64_t> send_pos_;  // [plan rows] position of each plan row in send_
  std::vector<float> send_, recv_, results_, back_, expert_in_, expert_out_;
};

}  // namespace sy::parallel
