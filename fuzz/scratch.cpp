#include "scratch.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

namespace sy::fuzz {
namespace fs = std::filesystem;

namespace {
std::string make_scratch_dir() {
  const fs::path base =
      fs::is_directory("/dev/shm") ? fs::path("/dev/shm") : fs::temp_directory_path();
  const fs::path dir = base / ("sy-fuzz-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return dir.string();
}
void remove_scratch_dir() {
  std::error_code ec;
  fs::remove_all(scratch_dir(), ec);
}
}  // namespace

const std::string& scratch_dir() {
  // Never destroyed: the exit handler that removes the directory still needs its name.
  static const std::string* dir = [] {
    auto* d = new std::string(make_scratch_dir());
    std::atexit(remove_scratch_dir);
    return d;
  }();
  return *dir;
}

std::string write_scratch(const std::string& name, std::string_view bytes) {
  return write_file_in(scratch_dir(), name, bytes);
}

std::string write_file_in(const std::string& dir, const std::string& name, std::string_view bytes) {
  const std::string path = dir + "/" + name;
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("fuzz: cannot write " + path);
  return path;
}

void write_seed(const std::string& dir, const std::string& name, std::string_view bytes) {
  fs::create_directories(dir);
  std::ofstream f(dir + "/" + name, std::ios::binary | std::ios::trunc);
  f.write(bytes.data(), std::streamsize(bytes.size()));
  if (!f) throw std::runtime_error("fuzz: cannot write seed " + dir + "/" + name);
}

std::string read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("fuzz: cannot read " + path);
  std::ostringstream s;
  s << f.rdbuf();
  return s.str();
}

std::pair<std::string_view, std::string_view> split_parts(std::string_view bytes) {
  const size_t at = bytes.find(kPartMarker);
  if (at == std::string_view::npos) return {bytes, {}};
  return {bytes.substr(0, at), bytes.substr(at + kPartMarker.size())};
}

}  // namespace sy::fuzz
