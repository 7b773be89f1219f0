// A file mapped read-only for the lifetime of the object (the checkpoint readers' storage).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>

namespace sy::io {

class MappedFile {
 public:
  // sy::Error naming the file when it cannot be opened, is not a regular file, or cannot be
  // mapped. An empty file maps to no bytes (data() is null).
  explicit MappedFile(const std::string& path);
  ~MappedFile();
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace sy::io
