#include "io/npy.h"

#include <cstring>

#include "io/file_util.h"

namespace sy::io {

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape) {
  std::string dims;
  int64_t n = 1;
  for (int64_t d : shape) {
    dims += std::to_string(d) + ", ";
    n *= d;
  }
  if (shape.size() > 1) dims.resize(dims.size() - 2);  // "(3,)" keeps its comma, "(3, 4)" not
  std::string header = "{'descr': '<f4', 'fortran_order': False, 'shape': (" + dims + "), }";
  // magic(6) + version(2) + header length(2) + header + '\n' is a multiple of 64.
  const size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::string bytes("\x93NUMPY\x01\x00", 8);
  const uint16_t len = uint16_t(header.size());
  bytes.append(reinterpret_cast<const char*>(&len), 2);
  bytes += header;
  const size_t offset = bytes.size();
  bytes.resize(offset + size_t(n) * 4);
  if (n) std::memcpy(bytes.data() + offset, data, size_t(n) * 4);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace sy::io
