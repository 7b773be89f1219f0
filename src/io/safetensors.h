// safetensors reader (memory-mapped, validated as the reference parser does) and an atomic
// writer. Format: u64 LE header length N, N bytes of JSON header, then the byte buffer.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "io/mapped_file.h"

#include "util/dtype.h"

namespace sy::io {

struct TensorInfo {
  std::string name;
  std::string dtype_name;      // as written in the header, e.g. "BF16", "I64"
  std::optional<DType> dtype;  // set when Switchyard computes with this dtype
  std::vector<int64_t> shape;
  const void* data = nullptr;  // inside the mapping
  uint64_t offset = 0;         // of data within the file (for reads that bypass the mapping)
  size_t nbytes = 0;
  std::string file;  // path of the file holding it

  int64_t numel() const;
  std::string shape_str() const;  // "[8, 64]"
};

// One mapped .safetensors file. Throws sy::Error naming the file on any violation.
class SafetensorsFile {
 public:
  explicit SafetensorsFile(const std::string& path);
  ~SafetensorsFile();
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  const std::string& path() const { return path_; }
  const std::vector<TensorInfo>& tensors() const { return tensors_; }
  const std::map<std::string, std::string>& metadata() const { return metadata_; }
  size_t file_size() const { return size_; }

 private:
  std::string path_;
  MappedFile map_;
  size_t size_ = 0;
  std::vector<TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

// All tensors of a checkpoint directory: model.safetensors, or the shards named by
// model.safetensors.index.json. Lookups by name throw a clear error when absent.
class TensorStore {
 public:
  static TensorStore open(const std::string& dir);
  // Tensors that live elsewhere (a GGUF file read under Hugging Face names): `owner` keeps
  // their bytes alive as long as the store. sy::Error for a name given twice.
  static TensorStore from_tensors(const std::string& origin, std::vector<TensorInfo> tensors,
                                  std::shared_ptr<const void> owner);

  const TensorInfo* find(const std::string& name) const;
  const TensorInfo& get(const std::string& name) const;  // throws "missing tensor"
  const std::map<std::string, const TensorInfo*>& all() const { return by_name_; }
  const std::string& dir() const { return dir_; }
  size_t total_bytes() const;

 private:
  std::string dir_;
  std::vector<std::unique_ptr<SafetensorsFile>> files_;
  std::vector<std::unique_ptr<TensorInfo>> infos_;  // from_tensors: the entries
  std::shared_ptr<const void> owner_;               // from_tensors: what holds the bytes
  std::map<std::string, const TensorInfo*> by_name_;
};

// A tensor to write: data must hold numel(shape) elements of dtype_name's size.
struct TensorToWrite {
  std::string name;
  std::string dtype_name;  // "F32", "BF16", "F16", ...
  std::vector<int64_t> shape;
  const void* data = nullptr;
  size_t nbytes = 0;
};

// Writes a .safetensors file atomically (temporary file in the same directory, then
// rename), so a failure never leaves a half-written file under `path`.
void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata = {{"format", "pt"}});

// The bytes of a .safetensors file holding `tensors` (what write_safetensors writes).
std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata = {
                                      {"format", "pt"}});

// Bits per element for a safetensors dtype string; nullopt if unknown.
std::optional<int> safetensors_dtype_bits(const std::string& dtype);

}  // namespace sy::io
