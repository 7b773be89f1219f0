// CRC-32 (IEEE 802.3 polynomial, as zlib's crc32 and Python's zlib.crc32): the checksum a
// checkpoint's manifest records for every shard, so a corrupt or truncated file is refused.
#pragma once

#include <cstddef>
#include <cstdint>

namespace sy {

// Continues `crc` (0 to start) over `n` bytes.
uint32_t crc32(const void* data, size_t n, uint32_t crc = 0);

}  // namespace sy
