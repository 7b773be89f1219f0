// OpenBLAS kernel selection. OpenBLAS reads OPENBLAS_CORETYPE once, when the library loads,
// so an environment that forces a weaker core (e.g. Haswell on an AVX-512 machine, which
// halves sgemm throughput) can only be overridden by restarting the process.
#pragma once

#include <string>

namespace sy::ops {

// Call first thing in main(). When OPENBLAS_CORETYPE names a core type weaker than this CPU
// supports (AVX-512 F/BW/DQ/VL present) and SWITCHYARD_KEEP_OPENBLAS_CORETYPE is not set,
// re-executes /proc/self/exe with OPENBLAS_CORETYPE=Cooperlake (AVX512_BF16) or SkylakeX.
// Returns normally when nothing needs changing, or when the re-exec fails (then the
// process continues with the slower kernels). Guarded by SWITCHYARD_BLAS_REEXEC against loops.
// passive_omp_wait: also restart with OMP_WAIT_POLICY=passive when it is unset. Training
// alternates OpenMP loops with threaded OpenBLAS calls; spinning OpenMP threads then fight
// OpenBLAS's threads for the cores (3x slower steps on 2 cores, machine.md).
void prefer_fast_blas(int argc, char** argv, bool passive_omp_wait = false);

// The core type OpenBLAS picked (openblas_get_corename), for logs and benchmark JSON.
std::string blas_core_name();

// The OPENBLAS_CORETYPE value this CPU deserves ("Cooperlake", "SkylakeX") or "" when the
// CPU lacks AVX-512 (then OpenBLAS's own choice stands).
std::string best_blas_core_type();

}  // namespace sy::ops
