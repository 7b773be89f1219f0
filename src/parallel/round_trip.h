// The two exchanges of one expert-parallel layer call around the owners' work: rows travel to
// the ranks that own their experts (after a counts exchange when the receivers do not know
// yet how many will come), each owner works on what arrived, and the results travel back in
// the layout the rows left in. Inference's forward (expert_parallel.h) and training's forward
// and backward (train/expert_parallel_train.h) are all such round trips; only the work differs.
//
// With overlap on, the exchanges are non-blocking and a progress thread drives them to
// completion while the caller computes other operators (ScMoE's window, a shared expert); the
// rows start moving as soon as the counts are in. With overlap off every exchange blocks where
// it starts. Calls of layers with different parity may be in flight at once: each parity has
// its own communicator, so their collectives never need a common order across ranks.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <vector>

#include "moe/expert_backend.h"
#include "moe/placement.h"
#include "moe/precision_policy.h"
#include "parallel/all_to_all.h"
#include "parallel/communicator.h"
#include "parallel/link_model.h"

namespace sy::parallel {

struct EpOptions {
  bool overlap = false;  // non-blocking exchanges driven in the background
  LinkModel link;        // emulated interconnect (inactive: real MPI timing)
  // ReaLB (inference): the precision each rank runs its experts in (moe/precision_policy.h).
  moe::PrecisionPolicy precision;
};

// One call in flight and its buffers (reused by the calls of one parity). The caller fills
// the send side before launch, reads `recv` once the rows arrived, fills `results` in recv's
// layout, and reads `back` (send's layout) once the results are home.
struct RoundTrip {
  int layer = -1;
  int64_t width = 0;                              // floats per row
  std::vector<int64_t> send_counts, recv_counts;  // [peers, E] rows per (peer, expert)
  // Values every rank sends to every peer along with the counts (its routing histogram, for
  // ReaLB's decision), and what arrived: [peers, S]. Empty: none.
  std::vector<int64_t> shared_send, shared_recv;
  std::vector<int64_t> send_rows, recv_rows;  // [peers]
  std::vector<float> send;                    // peer-major rows leaving (unless send_from)
  const float* send_from = nullptr;           // caller-owned rows instead of `send`
  std::vector<float> recv, results, back;
  // Seconds blocked in this call's exchanges: until the rows arrived, until the results were home.
  double blocked_dispatch_s = 0, blocked_home_s = 0;

  // When the rows had all arrived (monotonic seconds), once they have.
  double rows_arrived_at() const { return rows_.completed_at(); }
  // Communication time from start to completion (counts and rows out; results back).
  double dispatch_comm_seconds() const { return rows_.completed_at() - first_start_; }
  double home_comm_seconds() const { return home_.completed_at() - home_.started_at(); }
  // Bytes to and from other ranks in both directions of this call.
  int64_t remote_bytes(int me) const;

 private:
  friend class RoundTrips;
  enum class Stage { kIdle, kCounts, kRows, kRowsHere, kHome, kHomeDone };
  std::mutex mu_;  // guards stage_ and the exchanges (the progress thread polls them)
  Stage stage_ = Stage::kIdle;
  MPI_Comm comm_ = MPI_COMM_NULL;
  double first_start_ = 0;
  RowExchange counts_, rows_, home_;
  std::vector<int64_t> counts_out_, counts_in_;  // [peers, E + S]: counts and shared values
};

// Folds a completed call's exchange times into a running average (recent calls count most, so
// a change of batch shape is followed within a few calls): the operator scheduler's estimate.
void update_estimate(moe::ExchangeEstimate& estimate, const RoundTrip& call);

class RoundTrips {
 public:
  // Collective: every rank builds its engine at the same point (it duplicates the
  // communicator). `placement` says which experts' counts name rows for this rank.
  RoundTrips(const Communicator& comm, const moe::Placement& placement, EpOptions options);
  ~RoundTrips();
  RoundTrips(const RoundTrips&) = delete;
  RoundTrips& operator=(const RoundTrips&) = delete;

  // The idle call of `layer`'s parity, for the caller to fill.
  RoundTrip& prepare(int layer, int64_t width);
  // Starts the call. counts_known: recv_rows is already set (a backward pass reusing its
  // forward's layout), so no counts exchange; else recv_counts comes from send_counts.
  void launch(RoundTrip& call, bool counts_known);
  // Drives `layer`'s exchanges (cheap; between operators).
  void progress(int layer);
  // Blocks until the counts (and shared values) arrived; the rows may still be in flight.
  RoundTrip& await_counts(int layer);
  // Blocks until the rows arrived (call.recv holds them).
  RoundTrip& await_rows(int layer);
  // Starts the results (call.results, recv's layout) home.
  void send_results(RoundTrip& call);
  // Blocks until the results are home (call.back); release() then frees the call.
  RoundTrip& await_results(int layer);
  void release(RoundTrip& call);

  const EpOptions& options() const { return options_; }
  bool progress_thread_running() const { return thread_.joinable(); }

 private:
  using Stage = RoundTrip::Stage;
  RoundTrip& call_of(int layer) { return calls_[size_t(layer) % 2]; }
  void advance(RoundTrip& c);                  // c.mu_ held: moves the exchanges along
  double wait_for(RoundTrip& c, Stage stage);  // seconds blocked on communication
  void notify_thread(int delta_active);
  void progress_loop();

  const Communicator& comm_;
  int num_experts_ = 0;
  std::vector<int32_t> mine_;  // the experts whose rows this rank receives
  EpOptions options_;
  MPI_Comm comms_[2] = {MPI_COMM_NULL, MPI_COMM_NULL};
  RoundTrip calls_[2];
  // The progress thread (overlap on, MPI_THREAD_MULTIPLE available).
  std::thread thread_;
  std::mutex thread_mu_;
  std::condition_variable thread_cv_;
  bool stop_ = false;
  int active_calls_ = 0;
};

}  // namespace sy::parallel
