// Reads byte ranges of files around the page cache, so what a read costs is the storage's
// (O_DIRECT with aligned bounce reads; where a file system refuses O_DIRECT, a plain read
// followed by dropping the pages it filled). An optional bandwidth cap EMULATES a slower link
// shared by all threads: a read of n bytes ends no sooner than n / cap after the link's
// previous transfer. Thread-safe (pread on descriptors opened once).
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>

namespace sy::io {

class DirectReader {
 public:
  explicit DirectReader(double cap_gbps = 0);  // 0: no cap
  ~DirectReader();
  DirectReader(const DirectReader&) = delete;
  DirectReader& operator=(const DirectReader&) = delete;

  // Copies bytes [offset, offset + n) of `path` to dst. sy::Error naming the file when it
  // cannot be opened or ends before offset + n (truncated since it was loaded).
  void read(const std::string& path, uint64_t offset, size_t n, void* dst);

  // Without a copy: reads the aligned range around [offset, offset + n) into `buf` (kAlign
  // aligned, in_place_bytes(offset, n) long) and returns where byte `offset` landed in it, at
  // the same offset within its page as in an mmap of the file. Same errors as read().
  static constexpr uint64_t kAlign = 4096;  // covers the logical block size of common devices
  static size_t in_place_bytes(uint64_t offset, size_t n) {
    return size_t((offset + n + kAlign - 1) / kAlign * kAlign - offset / kAlign * kAlign);
  }
  const uint8_t* read_in_place(const std::string& path, uint64_t offset, size_t n, void* buf);

  // "O_DIRECT", "read + drop pages" (the file system refused O_DIRECT), per the last open.
  const char* mode() const { return direct_ ? "O_DIRECT" : "read + drop pages"; }
  double cap_gbps() const { return cap_gbps_; }

 private:
  int descriptor(const std::string& path, bool& direct);

  double cap_gbps_;
  std::mutex mutex_;
  std::map<std::string, std::pair<int, bool>> files_;  // path -> (fd, opened with O_DIRECT)
  std::atomic<bool> direct_ = true;
  std::chrono::steady_clock::time_point link_free_{};  // when the emulated link is idle again
};

}  // namespace sy::io
