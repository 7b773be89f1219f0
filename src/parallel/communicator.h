// The MPI world as Switchyard uses it: started only when the process was launched by mpirun
// (otherwise a world of one, with no MPI calls at all), errors turned into sy::Error, and a
// rank that fails takes the job down with a message instead of leaving the others to hang.
#pragma once

#include <mpi.h>

#include <cstdint>
#include <string>
#include <vector>

namespace sy::parallel {

// True when an MPI launcher (Open MPI's mpirun, or a PMI/PMIx one) started this process.
bool launched_by_mpi();

class Communicator {
 public:
  // Initialises MPI when launched by mpirun; the world of one otherwise. Call once, early.
  static Communicator& world(int* argc = nullptr, char*** argv = nullptr);

  bool distributed() const { return size_ > 1; }
  bool mpi_active() const { return active_; }
  int rank() const { return rank_; }
  int size() const { return size_; }
  MPI_Comm comm() const { return comm_; }
  bool is_root() const { return rank_ == 0; }
  // Whether several threads may call MPI at once (a progress thread).
  bool thread_multiple() const { return thread_multiple_; }

  // Prints "switchyard: error (rank r of n): message" and ends the whole job.
  [[noreturn]] void abort(const std::string& message) const;

  // Small collectives used outside the MoE layer (no-ops in a world of one).
  void barrier() const;
  void all_reduce_sum(std::vector<int64_t>& values) const;
  void all_reduce_sum(std::vector<double>& values) const;
  void all_reduce_sum(float* data, size_t n) const;  // in place (gradients)
  void broadcast(float* data, size_t n, int root) const;
  double all_reduce_max(double value) const;
  void broadcast(std::vector<int32_t>& values, int root = 0) const;
  std::vector<uint64_t> all_gather(uint64_t value) const;
  std::vector<double> gather(const std::vector<double>& values, int root = 0) const;  // rank-major
  // Every rank's string at `root` (index = rank; empty elsewhere), and root's string everywhere.
  std::vector<std::string> gather_strings(const std::string& value, int root = 0) const;
  void broadcast(std::string& value, int root = 0) const;

  ~Communicator();

 private:
  Communicator() = default;
  bool active_ = false;
  bool thread_multiple_ = false;
  int rank_ = 0, size_ = 1;
  MPI_Comm comm_ = MPI_COMM_NULL;
};

// Throws sy::Error naming `what` when an MPI call did not return MPI_SUCCESS.
void check_mpi(int code, const char* what);

}  // namespace sy::parallel
