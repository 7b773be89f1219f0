// NumPy .npy (format version 1.0) writer for float32 arrays, written atomically.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace sy::io {

void write_npy_f32(const std::string& path, const float* data, const std::vector<int64_t>& shape);

}  // namespace sy::io
