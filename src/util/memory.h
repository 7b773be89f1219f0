// Memory the process may still take, and a check to run before an allocation whose size comes
// from a file or a flag: a clear error naming what asked for how much, instead of the kernel's
// OOM killer or a bad_alloc deep inside a loop.
#pragma once

#include <cstdint>
#include <string>

namespace sy {

// MemAvailable + SwapFree from /proc/meminfo, capped by the cgroup (v2 or v1) limit minus its
// usage when there is one. UINT64_MAX when nothing can be read (then nothing is refused).
uint64_t available_memory_bytes();

// sy::Error "<what> needs <bytes> but only <available> are available" when `bytes` exceeds
// available_memory_bytes(). SY_MEMORY_LIMIT_MB (tests, users who share a machine) lowers the
// limit.
void require_memory(uint64_t bytes, const std::string& what);

// "1.50 GiB", "12.0 MiB", "512 B".
std::string format_bytes(uint64_t bytes);

// a * b (* c), or sy::Error naming `what` when the product does not fit in 64 bits.
uint64_t checked_mul(uint64_t a, uint64_t b, const std::string& what);

}  // namespace sy
