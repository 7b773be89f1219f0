// Thread counts. OpenMP is Switchyard's only thread pool: OpenBLAS is pinned to one thread
// and every large sgemm is split across OpenMP threads by the caller (matmul.cpp), so the
// two pools never spin against each other on a small machine.
#include "ops/threads.h"

#include <cblas.h>
#include <omp.h>

#include "util/error.h"

namespace sy::ops {

namespace {
int g_num_threads = 0;  // 0 = not set yet: omp_get_max_threads()
// OpenMP's runtime crashes creating 100k threads; no machine this engine targets has 1024 cores.
constexpr int kMaxThreads = 1024;
}  // namespace

void set_num_threads(int n) {
  if (n > kMaxThreads)
    fail("--threads {} is more than {} (this machine has {} cores; 0 = all of them)", n,
         kMaxThreads, omp_get_num_procs());
  if (n <= 0) n = omp_get_num_procs();
  g_num_threads = n;
  omp_set_num_threads(n);
  openblas_set_num_threads(1);
}

int num_threads() {
  if (g_num_threads == 0) {
    // First use without set_num_threads: keep OpenMP's default, still pin OpenBLAS.
    g_num_threads = omp_get_max_threads();
    openblas_set_num_threads(1);
  }
  return g_num_threads;
}

}  // namespace sy::ops
