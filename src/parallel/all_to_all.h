// The all-to-all that carries token rows to the ranks owning their experts and back.
// Counts go first (each rank learns how many rows of each expert every peer will send),
// then the rows, either blocking (MPI_Alltoallv) or non-blocking (MPI_Ialltoallv, driven by
// MPI_Test so the caller can compute meanwhile: ScMoE's overlap).
#pragma once

#include <cstdint>
#include <vector>

#include "parallel/communicator.h"

namespace sy::parallel {

// An in-flight exchange of float rows. Counts are in rows of `width` floats per peer.
class RowExchange {
 public:
  RowExchange() = default;
  RowExchange(const RowExchange&) = delete;
  RowExchange& operator=(const RowExchange&) = delete;
  ~RowExchange();

  // Starts sending send_rows[p] rows to each peer p (send is peer-major) and receiving
  // recv_rows[p] rows from each (recv is resized, peer-major).
  void start(const Communicator& comm, const float* send, const std::vector<int64_t>& send_rows,
             std::vector<float>& recv, const std::vector<int64_t>& recv_rows, int64_t width,
             bool nonblocking);
  bool test();  // progress; true when complete (always true after a blocking start)
  void wait();

 private:
  MPI_Request request_ = MPI_REQUEST_NULL;
  bool pending_ = false;
  std::vector<int> send_counts_, send_displs_, recv_counts_, recv_displs_;
};

// Exchanges a [peers, n] block of int64 counts: out[p][i] = what peer p sent us at [me][i].
std::vector<int64_t> exchange_counts(const Communicator& comm, const std::vector<int64_t>& send,
                                     int64_t per_peer);

}  // namespace sy::parallel
