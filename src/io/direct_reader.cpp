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
constexpr uint64_t kAlign = 4096;  // covers the logical block size of every common device

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
  const auto t0 = std::chrono::steady_clock::now();
  bool direct = false;
  const int fd = descriptor(path, direct);
  const uint64_t begin = direct ? offset / kAlign * kAlign : offset;
  const uint64_t end = direct ? (offset + n + kAlign - 1) / kAlign * kAlign : offset + n;
  std::unique_ptr<void, AlignedFree> bounce;
  char* buf = static_cast<char*>(dst);
  if (direct) {
    bounce.reset(std::aligned_alloc(kAlign, size_t(end - begin)));
    if (!bounce) fail("cannot allocate {} bytes to read '{}'", end - begin, path);
    buf = static_cast<char*>(bounce.get());
  }
  uint64_t done = 0;
  while (begin + done < end) {
    const ssize_t got = ::pread(fd, buf + done, size_t(end - begin - done), off_t(begin + done));
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
  if (direct)
    std::memcpy(dst, buf + (offset - begin), n);
  else
    ::posix_fadvise(fd, off_t(offset), off_t(n), POSIX_FADV_DONTNEED);  // next read: storage
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
}

}  // namespace sy::io
