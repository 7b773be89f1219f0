// An emulated interconnect for expert parallelism on one machine: shared-memory MPI is far
// faster, relative to compute, than the PCIe or NVLink links the ScMoE paper measured, so an
// exchange can be made to take at least latency + bytes / bandwidth, with bytes the larger of
// what this rank sends to and receives from other ranks (a full-duplex link per rank). Every
// report that uses it says so.
#pragma once

#include <cstdint>
#include <string>

#include <fmt/format.h>

namespace sy::parallel {

struct LinkModel {
  double gbit_per_s = 0;  // 0: no bandwidth limit
  double latency_us = 0;

  bool active() const { return gbit_per_s > 0 || latency_us > 0; }
  // The least time an exchange moving `bytes` over this rank's link takes.
  double seconds(int64_t bytes) const {
    if (!active()) return 0;
    return latency_us * 1e-6 + (gbit_per_s > 0 ? double(bytes) * 8.0 / (gbit_per_s * 1e9) : 0.0);
  }
  std::string describe() const {
    if (!active()) return "real MPI timing (no link model)";
    return fmt::format("EMULATED link: {} Gbit/s, {} us latency per exchange",
                       gbit_per_s > 0 ? fmt::format("{:g}", gbit_per_s) : "unlimited", latency_us);
  }
};

}  // namespace sy::parallel
