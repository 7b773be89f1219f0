// Expert parallelism: each rank owns some experts (a Placement over ranks) and its own tokens.
// At every MoE layer a rank routes its tokens and applies the capacity policy locally (done by
// moe::routed_start), then this backend sends each surviving pair's row to the expert's owner
// with an all-to-all, the owners run their experts over everything they received, and a second
// all-to-all brings the outputs home for the weighted combine.
//
// The three steps are separate calls (start / compute / finish, moe/expert_backend.h) around
// one round trip (round_trip.h): with overlap on, the exchanges progress in the background while
// the caller computes other operators (ScMoE's shortcut, or a shared expert).
#pragma once

#include <cstdint>
#include <vector>

#include "moe/moe_layer.h"
#include "moe/placement.h"
#include "parallel/communicator.h"
#include "parallel/round_trip.h"

namespace sy::parallel {

// Where one rank's time in one MoE layer went, summed over calls.
struct EpLayerTiming {
  double route_s = 0;          // router + capacity policy (measured by routed_start)
  double dispatch_s = 0;       // pack rows and start + blocked until the rows arrived
  double wait_dispatch_s = 0;  //   of which blocked (the exposed part of counts + rows there)
  double compute_s = 0;        // this rank's experts over the rows it received
  double combine_s = 0;        // blocked until the outputs came home + weighted scatter-add
  double wait_combine_s = 0;   //   of which blocked (the exposed part of the rows back)
  double comm_s = 0;           // the exchanges from start to completion (counts, rows, back)
  int64_t calls = 0;
  int64_t rows_sent = 0, rows_received = 0;  // rows leaving / arriving (self included)
  int64_t bytes_sent_remote = 0;             // bytes to other ranks, both directions' sends
  int slot = 0, slots = 0;  // the last call's expert slot, of `slots` + 1 (layers.h)
  // ReaLB: calls this rank ran its experts in low precision, and converting them.
  int64_t low_calls = 0;
  double convert_s = 0, convert_hidden_s = 0;
  double exposed_s() const { return wait_dispatch_s + wait_combine_s; }
};

// Rows of expert e that this rank computes come from every peer; a row's payload is
// `hidden` floats. `compute` is replaceable so tests can check the exchange on
// self-describing rows; the default runs the expert FFN.
class ExpertParallelBackend : public moe::ExpertBackend {
 public:
  ExpertParallelBackend(const Communicator& comm, moe::Placement placement, int num_layers,
                        EpOptions options = {});
  ~ExpertParallelBackend() override;

  void start(const moe::MoeBlock& block, const moe::RoutedPairs& pairs,
             moe::MoeScratch& scratch) override;
  void progress(int layer) override;
  void compute(int layer) override;
  void finish(int layer, float* out) override;
  moe::ExchangeEstimate estimate(int layer) const override;
  bool blocking() const override { return !trips_.options().overlap; }
  void note_slot(int layer, int slot, int slots) override {
    timings_[size_t(layer)].slot = slot, timings_[size_t(layer)].slots = slots;
  }

  const moe::Placement& placement() const { return placement_; }
  const EpOptions& options() const { return trips_.options(); }
  bool progress_thread_running() const { return trips_.progress_thread_running(); }
  const std::vector<EpLayerTiming>& timings() const { return timings_; }
  // ReaLB: this rank's choice in every layer call (empty without a precision policy).
  const std::vector<moe::PrecisionRecord>& precision_log() const { return precision_log_; }
  void reset_timings();

  // Test hook: replaces the expert computation (rows [n, H] of local expert `expert`).
  using ComputeFn = void (*)(int expert, const float* rows, int64_t n, int64_t hidden, float* out,
                             void* context);
  void set_compute_for_tests(ComputeFn fn, void* context) {
    compute_fn_ = fn, compute_ctx_ = context;
  }

 private:
  // What this backend keeps of one layer call besides its round trip (one per parity).
  struct Call {
    const moe::MoeBlock* block = nullptr;
    moe::MoeScratch* scratch = nullptr;
    double route_s = 0;
    double start_s = 0;               // in start() + waiting for the rows in compute()
    double compute_s = 0;             // this rank's experts
    double home_blocked_at_send = 0;  // a blocking exchange's time in compute()
    moe::DispatchPlan plan;
    std::vector<int64_t> send_pos;  // [plan rows] position of each plan row in the send rows
    std::vector<float> expert_in, expert_out;
    moe::PrecisionRecord precision;  // ReaLB: this call's choice
  };
  Call& call_of(int layer) { return calls_[size_t(layer) % 2]; }
  // ReaLB: with the counts in (every rank's routing histogram), choose this rank's precision
  // and convert its experts while the rows are still in flight.
  void choose_and_convert(Call& c, RoundTrip& trip);
  void run_experts(Call& c, RoundTrip& trip);

  const Communicator& comm_;
  moe::Placement placement_;
  RoundTrips trips_;
  std::vector<EpLayerTiming> timings_;
  std::vector<moe::ExchangeEstimate> estimates_;
  ComputeFn compute_fn_ = nullptr;
  void* compute_ctx_ = nullptr;
  Call calls_[2];
  moe::LowPrecisionExperts low_;                   // the converted experts of the running layer
  std::vector<const moe::FfnWeights*> low_views_;  // [E]: converted, or null (stored)
  std::vector<moe::PrecisionRecord> precision_log_;
};

}  // namespace sy::parallel
