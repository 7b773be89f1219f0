#include "parallel/communicator.h"

#include <algorithm>

#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>

#include "util/error.h"

namespace sy::parallel {

bool launched_by_mpi() {
  for (const char* v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "PMIX_RANK", "MPI_LOCALNRANKS"})
    if (std::getenv(v) != nullptr) return true;
  return false;
}

void check_mpi(int code, const char* what) {
  if (code == MPI_SUCCESS) return;
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  MPI_Error_string(code, text, &len);
  fail("MPI error in {}: {}", what, std::string(text, size_t(len)));
}

Communicator& Communicator::world(int* argc, char*** argv) {
  static Communicator c;
  static bool initialised = false;
  if (initialised) return c;
  initialised = true;
  if (!launched_by_mpi()) return c;
  int provided = 0;
  // The main thread and expert parallelism's progress thread call MPI (OpenMP threads never
  // do); without MPI_THREAD_MULTIPLE the exchanges progress between operators instead.
  if (MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
    fail("MPI_Init_thread failed; is this process started by a matching mpirun?");
  c.active_ = true;
  c.thread_multiple_ = provided >= MPI_THREAD_MULTIPLE;
  MPI_Comm_dup(MPI_COMM_WORLD, &c.comm_);
  MPI_Comm_set_errhandler(c.comm_, MPI_ERRORS_RETURN);
  MPI_Comm_rank(c.comm_, &c.rank_);
  MPI_Comm_size(c.comm_, &c.size_);
  return c;
}

Communicator::~Communicator() {
  if (!active_) return;
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) {
    MPI_Comm_free(&comm_);
    MPI_Finalize();
  }
}

void Communicator::abort(const std::string& message) const {
  std::fprintf(stderr, "switchyard: error (rank %d of %d): %s\n", rank_, size_, message.c_str());
  std::fflush(stderr);
  if (active_) MPI_Abort(MPI_COMM_WORLD, 1);
  std::exit(1);
}

void Communicator::barrier() const {
  if (active_) check_mpi(MPI_Barrier(comm_), "MPI_Barrier");
}

void Communicator::all_reduce_sum(std::vector<int64_t>& v) const {
  if (active_ && size_ > 1)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_INT64_T, MPI_SUM, comm_),
              "MPI_Allreduce");
}

void Communicator::all_reduce_sum(std::vector<double>& v) const {
  if (active_ && size_ > 1)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, v.data(), int(v.size()), MPI_DOUBLE, MPI_SUM, comm_),
              "MPI_Allreduce");
}

void Communicator::all_reduce_sum(float* data, size_t n) const {
  if (!active_ || size_ <= 1) return;
  constexpr size_t kMaxCount = size_t(1) << 30;  // MPI counts are int
  for (size_t i = 0; i < n; i += kMaxCount)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, data + i, int(std::min(kMaxCount, n - i)), MPI_FLOAT,
                            MPI_SUM, comm_),
              "MPI_Allreduce");
}

void Communicator::broadcast(float* data, size_t n, int root) const {
  if (!active_ || size_ <= 1) return;
  check_mpi(MPI_Bcast(data, int(n), MPI_FLOAT, root, comm_), "MPI_Bcast");
}

double Communicator::all_reduce_max(double value) const {
  if (active_ && size_ > 1)
    check_mpi(MPI_Allreduce(MPI_IN_PLACE, &value, 1, MPI_DOUBLE, MPI_MAX, comm_), "MPI_Allreduce");
  return value;
}

void Communicator::broadcast(std::vector<int32_t>& v, int root) const {
  if (!active_ || size_ == 1) return;
  int64_t n = int64_t(v.size());
  check_mpi(MPI_Bcast(&n, 1, MPI_INT64_T, root, comm_), "MPI_Bcast");
  v.resize(size_t(n));
  check_mpi(MPI_Bcast(v.data(), int(n), MPI_INT32_T, root, comm_), "MPI_Bcast");
}

std::vector<uint64_t> Communicator::all_gather(uint64_t value) const {
  std::vector<uint64_t> out(size_t(size_), value);
  if (active_ && size_ > 1)
    check_mpi(MPI_Allgather(&value, 1, MPI_UINT64_T, out.data(), 1, MPI_UINT64_T, comm_),
              "MPI_Allgather");
  return out;
}

std::vector<double> Communicator::gather(const std::vector<double>& v, int root) const {
  if (!active_ || size_ == 1) return v;
  std::vector<double> out(rank_ == root ? v.size() * size_t(size_) : 0);
  check_mpi(MPI_Gather(v.data(), int(v.size()), MPI_DOUBLE, out.data(), int(v.size()), MPI_DOUBLE,
                       root, comm_),
            "MPI_Gather");
  return out;
}

std::vector<std::string> Communicator::gather_strings(const std::string& value, int root) const {
  if (!active_ || size_ == 1) return {value};
  if (value.size() > size_t(1) << 30) fail("gather_strings: a string over 1 GiB");
  const int n = int(value.size());
  std::vector<int> sizes(rank_ == root ? size_t(size_) : 0), offsets(sizes.size());
  check_mpi(MPI_Gather(&n, 1, MPI_INT, sizes.data(), 1, MPI_INT, root, comm_), "MPI_Gather");
  std::string all;
  if (rank_ == root) {
    int64_t total = 0;
    for (size_t r = 0; r < sizes.size(); ++r) {
      offsets[r] = int(total);
      total += sizes[r];
    }
    if (total > int64_t(1) << 30) fail("gather_strings: over 1 GiB in all");
    all.resize(size_t(total));
  }
  check_mpi(MPI_Gatherv(value.data(), n, MPI_CHAR, all.data(), sizes.data(), offsets.data(),
                        MPI_CHAR, root, comm_),
            "MPI_Gatherv");
  std::vector<std::string> out(sizes.size());
  for (size_t r = 0; r < sizes.size(); ++r)
    out[r] = all.substr(size_t(offsets[r]), size_t(sizes[r]));
  return out;
}

void Communicator::broadcast(std::string& value, int root) const {
  if (!active_ || size_ == 1) return;
  int64_t n = int64_t(value.size());
  check_mpi(MPI_Bcast(&n, 1, MPI_INT64_T, root, comm_), "MPI_Bcast");
  if (n > int64_t(1) << 30) fail("broadcast: a string over 1 GiB");
  value.resize(size_t(n));
  check_mpi(MPI_Bcast(value.data(), int(n), MPI_CHAR, root, comm_), "MPI_Bcast");
}

}  // namespace sy::parallel
