#include "parallel/all_to_all.h"

#include <limits>
#include <thread>

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

double monotonic_seconds() {
  return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

RowExchange::~RowExchange() {
  complete_mpi();
}

void RowExchange::complete_mpi() {
  if (pending_) MPI_Wait(&request_, MPI_STATUS_IGNORE);
  pending_ = false;
}

void RowExchange::begin(const LinkModel& link, int64_t remote_bytes) {
  SY_ASSERT(!pending_);
  started_ = true;
  complete_ = false;
  blocked_s_ = 0;
  started_at_ = monotonic_seconds();
  modelled_end_ = started_at_ + link.seconds(remote_bytes);
}

void RowExchange::start(const Communicator& comm, const float* send,
                        const std::vector<int64_t>& send_rows, std::vector<float>& recv,
                        const std::vector<int64_t>& recv_rows, int64_t width, bool nonblocking,
                        const LinkModel& link) {
  start(comm.comm(), comm.rank(), send, send_rows, recv, recv_rows, width, nonblocking, link);
}

void RowExchange::start(MPI_Comm comm, int me, const float* send,
                        const std::vector<int64_t>& send_rows, std::vector<float>& recv,
                        const std::vector<int64_t>& recv_rows, int64_t width, bool nonblocking,
                        const LinkModel& link) {
  to_int_counts(send_rows, width, send_counts_, send_displs_);
  to_int_counts(recv_rows, width, recv_counts_, recv_displs_);
  int64_t total = 0, sent_remote = 0, received_remote = 0;
  for (size_t p = 0; p < recv_rows.size(); ++p) {
    total += recv_rows[p] * width;
    if (int(p) != me) received_remote += recv_rows[p] * width, sent_remote += send_rows[p] * width;
  }
  recv.resize(size_t(total));
  begin(link, std::max(sent_remote, received_remote) * int64_t(sizeof(float)));
  if (nonblocking) {
    check_mpi(MPI_Ialltoallv(send, send_counts_.data(), send_displs_.data(), MPI_FLOAT, recv.data(),
                             recv_counts_.data(), recv_displs_.data(), MPI_FLOAT, comm, &request_),
              "MPI_Ialltoallv");
    pending_ = true;
  } else {
    check_mpi(MPI_Alltoallv(send, send_counts_.data(), send_displs_.data(), MPI_FLOAT, recv.data(),
                            recv_counts_.data(), recv_displs_.data(), MPI_FLOAT, comm),
              "MPI_Alltoallv");
    wait();                                    // the link model's remaining time, if any
    blocked_s_ = completed_at_ - started_at_;  // all of a blocking exchange is exposed
  }
}

void RowExchange::start_counts(MPI_Comm comm, int me, const int64_t* send, int64_t* recv, int peers,
                               int64_t per_peer, bool nonblocking, const LinkModel& link) {
  (void)me;
  begin(link, (peers - 1) * per_peer * int64_t(sizeof(int64_t)));
  if (nonblocking) {
    check_mpi(MPI_Ialltoall(send, int(per_peer), MPI_INT64_T, recv, int(per_peer), MPI_INT64_T,
                            comm, &request_),
              "MPI_Ialltoall");
    pending_ = true;
  } else {
    check_mpi(
        MPI_Alltoall(send, int(per_peer), MPI_INT64_T, recv, int(per_peer), MPI_INT64_T, comm),
        "MPI_Alltoall");
    wait();
    blocked_s_ = completed_at_ - started_at_;
  }
}

bool RowExchange::test() {
  if (complete_ || !started_) return true;
  if (pending_) {
    int done = 0;
    check_mpi(MPI_Test(&request_, &done, MPI_STATUS_IGNORE), "MPI_Test");
    if (!done) return false;
    pending_ = false;
  }
  const double now = monotonic_seconds();
  if (now < modelled_end_) return false;
  complete_ = true;
  completed_at_ = now;
  return true;
}

void RowExchange::wait() {
  const double t0 = monotonic_seconds();
  int spins = 0;
  while (!test()) {
    // Sleep through the link model's remaining time instead of spinning on a core that another
    // rank may need; spin briefly on real MPI completion (shared-memory latency is microseconds).
    const double left = modelled_end_ - monotonic_seconds();
    if (!pending_ && left > 0)
      std::this_thread::sleep_for(std::chrono::duration<double>(left));
    else if (++spins > 1000)
      std::this_thread::yield();
  }
  blocked_s_ += monotonic_seconds() - t0;
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
