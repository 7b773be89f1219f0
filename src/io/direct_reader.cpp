#include "io/direct_reader.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <thread>

#include "util/error.h"

namespace sy::io {

namespace {
struct AlignedFree {
  void operator()(void* p) const { std::free(p); }
};
}  // namespace

DirectReader::DirectReader(double cap_gbps) : cap_gbps_(cap_gbps) {}

DirectReader::~DirectReader() {
  for (auto& [path, f] : files_) ::close(f.first);
}

int DirectReader::descriptor(const std::string& path, bool& direct) {
  std::lock_guard lock(mutex_);
  auto it = files_.find(path);
  if (it == files_.end()) {
    int fd = ::open(path.c_str(), O_RDONLY | O_DIRECT | O_CLOEXEC);
    bool is_direct = fd >= 0;
    if (fd < 0 && errno == EINVAL) fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);  // tmpfs
    if (fd < 0) fail("cannot open '{}' to read offloaded experts: {}", path, std::strerror(errno));
    direct_ = is_direct;
    it = files_.emplace(path, std::make_pair(fd, is_direct)).first;
  }
  direct = it->second.second;
  return it->second.first;
}

void DirectReader::read(const std::string& path, uint64_t offset, size_t n, void* dst) {
  // One bounce buffer per thread, kept: a fresh one would fault in every page on each read.
  thread_local std::unique_ptr<void, AlignedFree> bounce;
  thread_local size_t bounce_bytes = 0;
  const size_t need = in_place_bytes(offset, n);
  if (need > bounce_bytes) {
    bounce.reset(std::aligned_alloc(kAlign, need));
    if (!bounce) fail("cannot allocate {} bytes to read '{}'", need, path);
    bounce_bytes = need;
  }
  std::memcpy(dst, read_in_place(path, offset, n, bounce.get()), n);
}

const uint8_t* DirectReader::read_in_place(const std::string& path, uint64_t offset, size_t n,
                                           void* buf) {
  const auto t0 = std::chrono::steady_clock::now();
  bool direct = false;
  const int fd = descriptor(path, direct);
  // Both modes read the aligned range, so the bytes land at the same place in `buf`.
  const uint64_t begin = offset / kAlign * kAlign;
  const uint64_t end = begin + in_place_bytes(offset, n);
  char* out = static_cast<char*>(buf);
  uint64_t done = 0;
  while (begin + done < end) {
    const ssize_t got = ::pread(fd, out + done, size_t(end - begin - done), off_t(begin + done));
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail("reading '{}' at byte {}: {}", path, begin + done, std::strerror(errno));
    if (got == 0) break;  // end of file: fine past offset + n (alignment padding), else truncated
    done += uint64_t(got);
  }
  if (begin + done < offset + n) {
    struct stat st {};
    const uint64_t size = ::fstat(fd, &st) == 0 ? uint64_t(st.st_size) : begin + done;
    fail(
        "'{}' is {} bytes but an expert's weights run to byte {}: the file was truncated or "
        "replaced after the model was loaded",
        path, size, offset + n);
  }
  if (!direct)
    ::posix_fadvise(fd, off_t(begin), off_t(end - begin), POSIX_FADV_DONTNEED);  // next: storage
  if (cap_gbps_ > 0) {  // one link for every thread: transfers queue behind each other
    const auto transfer = std::chrono::duration_cast<std::chrono::steady_clock::duration>(
        std::chrono::duration<double>(double(n) * 8 / (cap_gbps_ * 1e9)));
    std::chrono::steady_clock::time_point done_at;
    {
      std::lock_guard lock(mutex_);
      done_at = std::max(t0, link_free_) + transfer;
      link_free_ = done_at;
    }
    std::this_thread::sleep_until(done_at);
  }
  return reinterpret_cast<const uint8_t*>(out + (offset - begin));
}

}  // namespace sy::io
