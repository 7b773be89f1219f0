// Small file helpers with actionable errors.
#pragma once

#include <string>

namespace sy::io {

std::string read_text_file(const std::string& path);  // throws sy::Error naming the path
// Writes `path` atomically: a temporary file beside it, fsync, then rename.
void write_file_atomic(const std::string& path, const void* data, size_t size);
void write_text_file_atomic(const std::string& path, const std::string& text);
bool file_exists(const std::string& path);
// Fails early (before long work) when `path` could not be written: its directory is missing.
void check_output_path(const std::string& path, const std::string& flag);

}  // namespace sy::io
