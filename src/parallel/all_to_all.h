// The all-to-all that carries token rows to the ranks owning their experts and back.
// Counts go first (each rank learns how many rows of each expert every peer will send),
// then the rows, either blocking (MPI_Alltoallv) or non-blocking (MPI_Ialltoallv, completed by
// MPI_Test from a progress thread or between operators, so the caller computes meanwhile:
// ScMoE's overlap). An optional link model makes each exchange last at least its modelled time.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "parallel/communicator.h"
#include "parallel/link_model.h"

namespace sy::parallel {

// Seconds on a monotonic clock (the stamps of exchanges and the reports).
double monotonic_seconds();

// One exchange in flight. Not thread-safe: a caller that polls it from several threads
// serialises the calls (expert_parallel.cpp holds a lock).
class RowExchange {
 public:
  RowExchange() = default;
  RowExchange(const RowExchange&) = delete;
  RowExchange& operator=(const RowExchange&) = delete;
  ~RowExchange();

  // Starts sending send_rows[p] rows of `width` floats to each peer p (send is peer-major) and
  // receiving recv_rows[p] rows from each (recv is resized, peer-major).
  void start(const Communicator& comm, const float* send, const std::vector<int64_t>& send_rows,
             std::vector<float>& recv, const std::vector<int64_t>& recv_rows, int64_t width,
             bool nonblocking, const LinkModel& link = {});
  void start(MPI_Comm comm, int me, const float* send, const std::vector<int64_t>& send_rows,
             std::vector<float>& recv, const std::vector<int64_t>& recv_rows, int64_t width,
             bool nonblocking, const LinkModel& link = {});
  // Exchanges `per_peer` int64 counts with every peer: recv[p * per_peer + i] = what peer p sent
  // at [me * per_peer + i]. Both arrays hold peers * per_peer values and must stay alive.
  void start_counts(MPI_Comm comm, int me, const int64_t* send, int64_t* recv, int peers,
                    int64_t per_peer, bool nonblocking, const LinkModel& link = {});

  // Progress; true once MPI has completed the exchange and its modelled time has passed.
  bool test();
  // Blocks until test() is true; the time spent here is added to blocked_seconds().
  void wait();
  // Completes an outstanding MPI request without the link model (teardown).
  void complete_mpi();

  double started_at() const { return started_at_; }
  double completed_at() const { return completed_at_; }  // when test() first saw it complete
  double blocked_seconds() const { return blocked_s_; }
  // MPI has delivered; only the link model's time may remain (until modelled_end()).
  bool delivered() const { return started_ && !pending_; }
  double modelled_end() const { return modelled_end_; }

 private:
  void begin(const LinkModel& link, int64_t remote_bytes);
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool pending_ = false;  // MPI request outstanding
  bool started_ = false, complete_ = false;
  double started_at_ = 0, completed_at_ = 0, modelled_end_ = 0, blocked_s_ = 0;
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;
};

// Blocking counts exchange of a [peers, n] block: out[p][i] = what peer p sent us at [me][i].
std::vector<int64_t> exchange_counts(const Communicator& comm, const std::vector<int64_t>& send,
                                     int64_t per_peer);

}  // namespace sy::parallel
