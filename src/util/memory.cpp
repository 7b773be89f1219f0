#include "util/memory.h"

#include <fmt/format.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>

#include "util/error.h"

namespace sy {
namespace {

// "Key:   123 kB" lines of /proc/meminfo, in bytes; 0 when absent.
uint64_t meminfo(const std::string& key) {
  std::ifstream f("/proc/meminfo");
  std::string line;
  while (std::getline(f, line)) {
    if (line.compare(0, key.size() + 1, key + ":") != 0) continue;
    std::istringstream in(line.substr(key.size() + 1));
    uint64_t kb = 0;
    in >> kb;
    return kb * 1024;
  }
  return 0;
}

// A number from a cgroup file; UINT64_MAX for "max" or when unreadable.
uint64_t cgroup_value(const std::string& path) {
  std::ifstream f(path);
  std::string s;
  if (!(f >> s) || s == "max") return UINT64_MAX;
  try {
    return std::stoull(s);
  } catch (const std::exception&) {
    return UINT64_MAX;
  }
}

}  // namespace

uint64_t available_memory_bytes() {
  uint64_t avail = UINT64_MAX;
  const uint64_t mem = meminfo("MemAvailable");
  if (mem > 0) avail = mem + meminfo("SwapFree");
  for (const auto& [limit_path, usage_path] :
       {std::pair<const char*, const char*>{"/sys/fs/cgroup/memory.max",
                                            "/sys/fs/cgroup/memory.current"},
        {"/sys/fs/cgroup/memory/memory.limit_in_bytes",
         "/sys/fs/cgroup/memory/memory.usage_in_bytes"}}) {
    const uint64_t limit = cgroup_value(limit_path);
    if (limit == UINT64_MAX || limit >= (uint64_t(1) << 60)) continue;  // v1 "no limit" is huge
    const uint64_t usage = cgroup_value(usage_path);
    avail = std::min(avail, usage == UINT64_MAX || usage > limit ? 0 : limit - usage);
  }
  if (const char* cap = std::getenv("SY_MEMORY_LIMIT_MB")) {
    try {
      avail = std::min(avail, uint64_t(std::stoull(cap)) << 20);
    } catch (const std::exception&) {
      fail("SY_MEMORY_LIMIT_MB='{}' is not a number of megabytes", cap);
    }
  }
  return avail;
}

void require_memory(uint64_t bytes, const std::string& what) {
  const uint64_t avail = available_memory_bytes();
  if (bytes > avail)
    fail("{} needs {} but only {} of memory is available", what, format_bytes(bytes),
         format_bytes(avail));
}

std::string format_bytes(uint64_t bytes) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"};
  double v = double(bytes);
  int u = 0;
  while (v >= 1024 && u < 6) v /= 1024, ++u;
  if (u == 0) return fmt::format("{} B", bytes);
  const int decimals = v < 10 ? 2 : v < 100 ? 1 : 0;
  return fmt::format("{:.{}f} {}", v, decimals, units[u]);
}

uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what) {
  uint64_t r = 0;
  if (__builtin_mul_overflow(a, b, &r)) fail("{}: size overflows 64 bits", what);
  return r;
}

}  // namespace sy
