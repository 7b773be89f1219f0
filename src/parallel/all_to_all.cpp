#include "parallel/all_to_all.h"

#include <limits>

#include "util/error.h"

namespace sy::parallel {

namespace {

// Open MPI's v-collectives take int counts and displacements: one exchange must stay under
// 2^31 floats per rank.
void to_int_counts(const std::vector<int64_t>& rows, int64_t width, std::vector<int>& counts,
                   std::vector<int>& displs) {
  counts.resize(rows.size());
  displs.resize(rows.size());
  int64_t offset = 0;
  for (size_t p = 0; p < rows.size(); ++p) {
    const int64_t n = rows[p] * width;
    if (offset + n > std::numeric_limits<int>::max())
      fail("all-to-all of {} floats exceeds MPI's int counts; use fewer tokens per call",
           offset + n);
    counts[p] = int(n);
    displs[p] = int(offset);
    offset += n;
  }
}

}  // namespace

RowExchange::~RowExchange() {
  if (pending_) MPI_Wait(&request_, MPI_STATUS_IGNORE);
}

void RowExchange::start(const Communicator& comm, const float* send,
                        const std::vector<int64_t>& send_rows, std::vector<float>& recv,
                        const std::vector<int64_t>& recv_rows, int64_t width, bool nonblocking) {
  SY_ASSERT(!pending_);
  to_int_counts(send_rows, width, send_counts_, send_displs_);
  to_int_counts(recv_rows, width, recv_counts_, recv_displs_);
  int64_t total = 0;
  for (int64_t r : recv_rows) total += r * width;
  recv.resize(size_t(total));
  if (nonblocking) {
    check_mpi(
        MPI_Ialltoallv(send, send_counts_.data(), send_displs_.data(), MPI_FLOAT, recv.data(),
                       recv_counts_.data(), recv_displs_.data(), MPI_FLOAT, comm.comm(), &request_),
        "MPI_Ialltoallv");
    pending_ = true;
  } else {
    check_mpi(MPI_Alltoallv(send, send_counts_.data(), send_displs_.data(), MPI_FLOAT, recv.data(),
                            recv_counts_.data(), recv_displs_.data(), MPI_FLOAT, comm.comm()),
              "MPI_Alltoallv");
  }
}

bool RowExchange::test() {
  if (!pending_) return true;
  int done = 0;
  check_mpi(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), "MPI_Test");
  if (done) pending_ = false;
  return done != 0;
}

void RowExchange::wait() {
  while (!test()) {
  }
}

std::vector<int64_t> exchange_counts(const Communicator& comm, const std::vector<int64_t>& send,
                                     int64_t per_peer) {
  SY_ASSERT(int64_t(send.size()) == per_peer * comm.size());
  std::vector<int64_t> recv(send.size());
  check_mpi(MPI_Alltoall(send.data(), int(per_peer), MPI_INT64_T, recv.data(), int(per_peer),
                         MPI_INT64_T, comm.comm()),
            "MPI_Alltoall");
  return recv;
}

}  // namespace sy::parallel
