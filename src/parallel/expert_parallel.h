// Expert parallelism: each rank owns some experts (a Placement over ranks) and its own tokens.
// At every MoE layer a rank routes its tokens and applies the capacity policy locally (done by
// moe::routed_start), then this backend sends each surviving pair's row to the expert's owner
// with an all-to-all, the owners run their experts over everything they received, and a second
// all-to-all brings the outputs home for the weighted combine.
//
// The three steps are separate calls (start / compute / finish, moe/expert_backend.h). With
// overlap on, the exchanges are non-blocking and a progress thread drives them to completion
// while the caller computes other operators (ScMoE's shortcut, or a shared expert); the rows
// start moving as soon as the counts exchange completes. With overlap off every exchange
// blocks where it starts. Calls of layers with different parity may be in flight at once: each
// parity has its own communicator, so their collectives never need a common order.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "moe/moe_layer.h"
#include "moe/placement.h"
#include "parallel/all_to_all.h"
#include "parallel/communicator.h"
#include "parallel/link_model.h"

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
  double exposed_s() const { return wait_dispatch_s + wait_combine_s; }
};

struct EpOptions {
  bool overlap = false;  // non-blocking exchanges driven in the background
  LinkModel link;        // emulated interconnect (inactive: real MPI timing)
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
  bool blocking() const override { return !options_.overlap; }
  void note_slot(int layer, int slot, int slots) override {
    timings_[size_t(layer)].slot = slot, timings_[size_t(layer)].slots = slots;
  }

  const moe::Placement& placement() const { return placement_; }
  const EpOptions& options() const { return options_; }
  bool progress_thread_running() const { return thread_.joinable(); }
  const std::vector<EpLayerTiming>& timings() const { return timings_; }
  void reset_timings();

  // Test hook: replaces the expert computation (rows [n, H] of local expert `expert`).
  using ComputeFn = void (*)(int expert, const float* rows, int64_t n, int64_t hidden, float* out,
                             void* context);
  void set_compute_for_tests(ComputeFn fn, void* context) {
    compute_fn_ = fn, compute_ctx_ = context;
  }

 private:
  enum class Stage { kIdle, kCounts, kRows, kRowsHere, kHome, kHomeDone };
  // One MoE layer call in flight and its buffers (reused by the layers of one parity).
  struct Call {
    std::mutex mu;  // guards stage and the exchanges (the progress thread polls them)
    Stage stage = Stage::kIdle;
    int layer = -1;
    MPI_Comm comm = MPI_COMM_NULL;
    const moe::MoeBlock* block = nullptr;
    moe::MoeScratch* scratch = nullptr;
    int64_t tokens = 0, hidden = 0;
    double route_s = 0;
    double start_s = 0;             // in start() + waiting for the rows in compute()
    double blocked_dispatch_s = 0;  // of which blocked on the counts and rows
    double blocked_home_s = 0;      // blocked on the rows back (compute() and finish())
    double compute_s = 0;
    moe::DispatchPlan plan;
    std::vector<int64_t> send_pos;                  // [plan rows] position of each plan row in send
    std::vector<int64_t> send_counts, recv_counts;  // [peers, E]
    std::vector<int64_t> send_rows, recv_rows;      // [peers]
    std::vector<float> send, recv, results, back, expert_in, expert_out;
    RowExchange counts, rows, home;
  };
  Call& call_of(int layer);
  void advance(Call& c);  // c.mu held: moves the exchanges along (starts the rows after counts)
  double wait_for(Call& c, Stage stage);  // blocks until c reaches `stage`; seconds blocked
  void run_experts(Call& c);
  void progress_loop();

  const Communicator& comm_;
  moe::Placement placement_;
  EpOptions options_;
  std::vector<EpLayerTiming> timings_;
  std::vector<moe::ExchangeEstimate> estimates_;
  ComputeFn compute_fn_ = nullptr;
  void* compute_ctx_ = nullptr;
  MPI_Comm comms_[2] = {MPI_COMM_NULL, MPI_COMM_NULL};
  Call calls_[2];
  // The progress thread (overlap on, MPI_THREAD_MULTIPLE available).
  std::thread thread_;
  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool stop_ = false;
  int active_calls_ = 0;
};

}  // namespace sy::parallel
