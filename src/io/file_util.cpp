#include "io/file_util.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "util/error.h"

namespace sy::io {

std::string read_text_file(const std::string& path) {
  std::error_code ec;
  if (std::filesystem::is_directory(path, ec))
    fail("cannot read '{}': it is a directory, not a file", path);
  std::ifstream in(path, std::ios::binary);
  if (!in) fail("cannot open '{}': {}", path, std::strerror(errno));
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) fail("error reading '{}'", path);
  return ss.str();
}

bool file_exists(const std::string& path) {
  return std::filesystem::is_regular_file(path);
}

void check_output_path(const std::string& path, const std::string& flag) {
  if (path.empty() || path == "-") return;
  const auto parent = std::filesystem::absolute(path).parent_path();
  if (!std::filesystem::is_directory(parent))
    fail("{} {}: the directory '{}' does not exist", flag, path, parent.string());
}

namespace {

// Writes all of `data` to `fd`; the errno of the first failure, or 0.
int write_all(int fd, const char* p, size_t left) {
  while (left > 0) {
    const ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return errno;
    }
    p += n;
    left -= size_t(n);
  }
  return 0;
}

// Standard output, a device, a FIFO: written where it is.
void write_in_place(const std::string& path, const ChunkProducer& produce) {
  const bool to_stdout = path == "-";
  if (to_stdout) std::fflush(stdout);  // keep the order of earlier buffered output
  const int fd = to_stdout ? STDOUT_FILENO : ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) fail("cannot open '{}' for writing: {}", path, std::strerror(errno));
  int err = 0;
  try {
    produce([&](const void* data, size_t size) {
      if (!err) err = write_all(fd, static_cast<const char*>(data), size);
    });
  } catch (...) {
    if (!to_stdout) ::close(fd);
    throw;
  }
  const int close_err = to_stdout ? 0 : (::close(fd) != 0 ? errno : 0);
  if (err || close_err)
    fail("error writing '{}': {}", to_stdout ? "standard output" : path,
         std::strerror(err ? err : close_err));
}

}  // namespace

void write_file_atomic_chunks(const std::string& path_arg, const ChunkProducer& produce) {
  std::string path = path_arg;
  if (path == "-") return write_in_place(path, produce);
  struct stat st {};
  if (::lstat(path.c_str(), &st) == 0 && S_ISLNK(st.st_mode)) {
    std::error_code ec;
    const auto target = std::filesystem::canonical(path, ec);
    if (!ec) path = target.string();  // a dangling link is replaced like a missing file
  }
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) fail("cannot write '{}': it is a directory", path_arg);
    if (!S_ISREG(st.st_mode)) return write_in_place(path, produce);
  }
  std::string tmp = path + ".tmp.XXXXXX";
  int fd = mkstemp(tmp.data());
  if (fd < 0) fail("cannot create a temporary file beside '{}': {}", path, std::strerror(errno));
  int err = 0;
  try {
    produce([&](const void* data, size_t size) {
      if (!err) err = write_all(fd, static_cast<const char*>(data), size);
    });
  } catch (...) {  // the producer failed: no half-written file stays behind
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (err) {
    ::close(fd);
    ::unlink(tmp.c_str());
    fail("error writing '{}': {}", path, std::strerror(err));
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    fail("error flushing '{}': {}", path, std::strerror(err));
  }
  ::chmod(tmp.c_str(), 0644);
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    err = errno;
    ::unlink(tmp.c_str());
    fail("cannot move the new file into place at '{}': {}", path, std::strerror(err));
  }
}

void write_file_atomic(const std::string& path, const void* data, size_t size) {
  write_file_atomic_chunks(path, [&](const ChunkSink& sink) { sink(data, size); });
}

void write_text_file_atomic(const std::string& path, const std::string& text) {
  write_file_atomic(path, text.data(), text.size());
}

}  // namespace sy::io
