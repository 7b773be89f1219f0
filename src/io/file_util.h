// Small file helpers with actionable errors.
#pragma once

#include <functional>
#include <string>

namespace sy::io {

std::string read_text_file(const std::string& path);  // throws sy::Error naming the path
// Writes `path` atomically when it is (or will be) a regular file: a temporary file beside it,
// fsync, then rename, so a failure never leaves a half-written file. "-" is standard output;
// an existing device, FIFO or socket is written in place (never replaced by a file); a symbolic
// link keeps pointing where it did (its target is replaced). Every write is checked.
void write_file_atomic(const std::string& path, const void* data, size_t size);
// The same for a file written in pieces: `produce` passes each piece to the sink it is given
// (so a large file never sits in memory whole). If it throws, the temporary file is removed.
using ChunkSink = std::function<void(const void* data, size_t size)>;
using ChunkProducer = std::function<void(const ChunkSink& sink)>;
void write_file_atomic_chunks(const std::string& path, const ChunkProducer& produce);
void write_text_file_atomic(const std::string& path, const std::string& text);
bool file_exists(const std::string& path);
// Fails early (before long work) when `path` could not be written: its directory is missing.
void check_output_path(const std::string& path, const std::string& flag);

}  // namespace sy::io
