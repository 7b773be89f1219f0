// Files for targets whose parser reads from disk (memory-mapped safetensors, checkpoint
// directories): one private directory per process, in memory-backed /dev/shm when it exists,
// removed at exit.
#pragma once

#include <string>
#include <string_view>

namespace sy::fuzz {

// The process's scratch directory (created on first use).
const std::string& scratch_dir();

// Writes `bytes` to scratch_dir()/name (plain write: speed matters more than atomicity here)
// and returns the path.
std::string write_scratch(const std::string& name, std::string_view bytes);

// Writes `bytes` to dir/name (plain write) and returns the path.
std::string write_file_in(const std::string& dir, const std::string& name, std::string_view bytes);

// Writes a seed file `dir/name`.
void write_seed(const std::string& dir, const std::string& name, std::string_view bytes);

// Reads a whole file (seeds are made from files the project writes).
std::string read_file(const std::string& path);

// Splits "a<marker>b" at the first marker (multi-file inputs); b is empty when absent.
std::pair<std::string_view, std::string_view> split_parts(std::string_view bytes);
inline constexpr std::string_view kPartMarker = "\n#--sy-fuzz-next-file--#\n";

}  // namespace sy::fuzz
