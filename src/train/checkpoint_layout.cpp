#include "train/checkpoint_layout.h"

#include <fcntl.h>
#include <fmt/ranges.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <regex>

#include "util/error.h"

namespace sy::train::layout {

std::string shape_str(const std::vector<int64_t>& shape) {
  return fmt::format("[{}]", fmt::join(shape, ", "));
}

void fsync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) fail("cannot open directory '{}' to sync it: {}", dir.string(), std::strerror(errno));
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) fail("cannot sync directory '{}': {}", dir.string(), std::strerror(err));
}

fs::path checkpoint_path(const std::string& dir) {
  fs::path p = fs::absolute(dir).lexically_normal();
  return p.has_filename() ? p : p.parent_path();
}

bool is_shard_file(const std::string& name) {
  static const std::regex re(R"([wm][0-9]{6}-[A-Za-z0-9_-]{1,48}\.safetensors(\.tmp\.\w+)?)");
  return std::regex_match(name, re);
}

}  // namespace sy::train::layout
