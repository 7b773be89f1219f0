// prefer_fast_blas: restarts the process with a better OPENBLAS_CORETYPE (see blas_env.h).
#include "ops/blas_env.h"

#include <cblas.h>
#include <cpuid.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string_view>

namespace sy::ops {

namespace {

struct CpuAvx512 {
  bool base = false;  // F, BW, DQ, VL and OS support for zmm state
  bool bf16 = false;
};

CpuAvx512 detect_avx512() {
  CpuAvx512 out;
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return out;
  unsigned xcr0_lo, xcr0_hi;
  __asm__("xgetbv" : "=a"(xcr0_lo), "=d"(xcr0_hi) : "c"(0));
  if ((xcr0_lo & 0xe6) != 0xe6) return out;  // XMM, YMM, opmask, ZMM_Hi256, Hi16_ZMM
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return out;
  out.base = (b & bit_AVX512F) && (b & bit_AVX512BW) && (b & bit_AVX512DQ) && (b & bit_AVX512VL);
  if (out.base && a >= 1 && __get_cpuid_count(7, 1, &a, &b, &c, &d)) out.bf16 = (a & (1u << 5));
  return out;
}

// OpenBLAS core types that already use AVX-512 kernels; anything else is weaker here.
bool is_avx512_core(std::string_view name) {
  std::string lower(name);
  std::transform(lower.begin(), lower.end(), lower.begin(), ::tolower);
  return lower == "skylakex" || lower == "cooperlake" || lower == "sapphirerapids";
}

}  // namespace

std::string best_blas_core_type() {
  const CpuAvx512 cpu = detect_avx512();
  if (!cpu.base) return "";
  return cpu.bf16 ? "Cooperlake" : "SkylakeX";
}

std::string blas_core_name() {
  const char* name = openblas_get_corename();
  return name ? name : "?";
}

void prefer_fast_blas(int argc, char** argv, bool passive_omp_wait) {
  (void)argc;
  if (std::getenv("SWITCHYARD_BLAS_REEXEC") != nullptr) return;  // already restarted once
  const char* env = std::getenv("OPENBLAS_CORETYPE");
  const std::string forced = env ? env : "";  // setenv below may invalidate env
  std::string best;
  if (!forced.empty() && std::getenv("SWITCHYARD_KEEP_OPENBLAS_CORETYPE") == nullptr &&
      !is_avx512_core(forced))
    best = best_blas_core_type();
  const bool set_wait = passive_omp_wait && std::getenv("OMP_WAIT_POLICY") == nullptr;
  if (best.empty() && !set_wait) return;
  // Said once per shell session would be ideal; here: only when asked, since every command
  // (and every MPI rank) passes through this (README "OpenBLAS core type" documents it).
  if (std::getenv("SWITCHYARD_VERBOSE") != nullptr)
    std::fprintf(stderr,
                 "switchyard: restarting with%s%s%s (set SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1 "
                 "or OMP_WAIT_POLICY to keep yours)\n",
                 best.empty() ? "" : " OPENBLAS_CORETYPE=", best.c_str(),
                 set_wait ? " OMP_WAIT_POLICY=passive" : "");
  if (!best.empty()) setenv("OPENBLAS_CORETYPE", best.c_str(), 1);
  if (set_wait) setenv("OMP_WAIT_POLICY", "passive", 1);
  setenv("SWITCHYARD_BLAS_REEXEC", "1", 1);
  std::fflush(nullptr);
  execv("/proc/self/exe", argv);
  // execv returned: keep running with the kernels already loaded, and say so.
  std::fprintf(stderr, "switchyard: re-exec failed (%s); continuing with the current kernels\n",
               std::strerror(errno));
  if (!best.empty()) setenv("OPENBLAS_CORETYPE", forced.c_str(), 1);
  if (set_wait) unsetenv("OMP_WAIT_POLICY");
}

}  // namespace sy::ops
