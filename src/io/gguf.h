// GGUF reader (memory-mapped, validated as strictly as ggml's own gguf.cpp: every malformed
// file is an sy::Error naming the file and what is wrong) and writer. Layout (little-endian):
// "GGUF", u32 version (2 or 3), u64 tensor count, u64 key-value count, the key-value pairs,
// the tensor infos (name, dims innermost first, ggml type, offset), padding to the alignment
// (general.alignment, default 32), then the tensor data, each tensor at its aligned offset.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "io/mapped_file.h"

#include "util/ggml_types.h"

namespace sy::io {

// Metadata value types, as numbered in the file.
enum class GgufValueType : uint32_t {
  kU8 = 0,
  kI8 = 1,
  kU16 = 2,
  kI16 = 3,
  kU32 = 4,
  kI32 = 5,
  kF32 = 6,
  kBool = 7,
  kString = 8,
  kArray = 9,
  kU64 = 10,
  kI64 = 11,
  kF64 = 12,
};
const char* gguf_value_type_name(GgufValueType t);

// One metadata value: a scalar, a string, or an array of scalars or strings (not of arrays).
// Integers and bools are held in `i` (u64 values above INT64_MAX in `u`), floats in `f`.
struct GgufValue {
  GgufValueType type = GgufValueType::kU8;
  GgufValueType element = GgufValueType::kU8;  // arrays
  int64_t i = 0;
  uint64_t u = 0;
  double f = 0;
  std::string s;
  std::vector<std::string> strings;  // an array of strings
  std::vector<double> numbers;       // an array of numbers (integers held exactly up to 2^53)
  bool is_integer() const;
  bool is_float() const { return type == GgufValueType::kF32 || type == GgufValueType::kF64; }
};

struct GgufTensorInfo {
  std::string name;
  GgmlType type = GgmlType::F32;
  std::vector<int64_t> dims;  // innermost first, as in the file (ggml ne[])
  uint64_t offset = 0;        // within the file
  size_t nbytes = 0;
  const void* data = nullptr;  // inside the mapping
  int64_t numel() const;
  // Dims outermost first: the row-major shape a Hugging Face tensor has ([out, in]).
  std::vector<int64_t> shape() const { return {dims.rbegin(), dims.rend()}; }
};

class GgufFile {
 public:
  explicit GgufFile(const std::string& path);
  ~GgufFile();
  GgufFile(const GgufFile&) = delete;
  GgufFile& operator=(const GgufFile&) = delete;

  const std::string& path() const { return path_; }
  uint32_t version() const { return version_; }
  uint32_t alignment() const { return alignment_; }
  const std::map<std::string, GgufValue>& metadata() const { return metadata_; }
  const std::vector<GgufTensorInfo>& tensors() const { return tensors_; }
  const GgufTensorInfo* find_tensor(const std::string& name) const;

  // Typed metadata access; each throws a clear error naming the key when it is missing or of
  // another type. Integer getters accept every integer type whose value fits.
  const GgufValue* find(const std::string& key) const;
  uint64_t get_uint(const std::string& key) const;
  std::optional<uint64_t> uint_or_none(const std::string& key) const;
  double get_float(const std::string& key) const;  // F32 / F64
  std::optional<double> float_or_none(const std::string& key) const;
  bool get_bool(const std::string& key) const;
  const std::string& get_string(const std::string& key) const;
  const std::vector<std::string>& get_strings(const std::string& key) const;
  const std::vector<double>& get_numbers(const std::string& key) const;

 private:
  std::string path_;
  MappedFile map_;
  size_t size_ = 0;
  uint32_t version_ = 0, alignment_ = 32;
  std::map<std::string, GgufValue> metadata_;
  std::vector<GgufTensorInfo> tensors_;
  std::map<std::string, size_t> tensor_index_;
};

// Builds a GGUF file: metadata in insertion order, then tensors at aligned offsets.
class GgufWriter {
 public:
  explicit GgufWriter(uint32_t alignment = 32) : alignment_(alignment) {}
  void set_uint32(const std::string& key, uint32_t v);
  void set_uint64(const std::string& key, uint64_t v);
  void set_int32(const std::string& key, int32_t v);
  void set_float32(const std::string& key, float v);
  void set_bool(const std::string& key, bool v);
  void set_string(const std::string& key, const std::string& v);
  void set_strings(const std::string& key, const std::vector<std::string>& v);
  void set_float32s(const std::string& key, const std::vector<float>& v);
  void set_int32s(const std::string& key, const std::vector<int32_t>& v);
  // `dims` innermost first; `bytes` must be what `type` needs for them. The data is copied.
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims,
                  const void* bytes, size_t nbytes);
  // The same with the data made only when the file is written (one tensor in memory at a
  // time): `produce` appends exactly the bytes `type` needs for `dims` to its argument.
  using TensorProducer = std::function<void(std::string& out)>;
  void add_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims,
                  TensorProducer produce);
  std::string serialize() const;
  // Atomically (a temporary file renamed into place): never a half-written file. Streams the
  // tensors, so memory holds one tensor at a time.
  void write(const std::string& path) const;

 private:
  void put_key(const std::string& key, GgufValueType type);
  uint32_t alignment_;
  int64_t kv_count_ = 0;
  std::string kv_;  // the encoded key-value pairs
  struct Tensor {
    std::string name;
    GgmlType type;
    std::vector<int64_t> dims;
    size_t nbytes;
    TensorProducer produce;
  };
  void check_tensor(const std::string& name, GgmlType type, const std::vector<int64_t>& dims) const;
  size_t tensor_bytes(GgmlType type, const std::vector<int64_t>& dims) const;
  // Everything before the first tensor's data (header, metadata, tensor infos, padding).
  std::string head() const;
  // Each piece of the file in order, to `sink`.
  void stream(const std::function<void(const void*, size_t)>& sink) const;
  std::vector<Tensor> tensors_;
};

}  // namespace sy::io
