#include "io/gguf.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <limits>
#include <memory>
#include <set>

#include "io/file_util.h"
#include "util/error.h"

namespace sy::io {
namespace {

constexpr uint32_t kMagic = 0x46554747;  // "GGUF" read as a little-endian u32
constexpr uint64_t kMaxKeyBytes = 65535;
constexpr uint64_t kMaxTensorName = 63;  // ggml's GGML_MAX_NAME (64) with its terminator
constexpr int kMaxDims = 4;

size_t value_size(GgufValueType t) {
  switch (t) {
    case GgufValueType::kU8:
    case GgufValueType::kI8:
    case GgufValueType::kBool:
      return 1;
    case GgufValueType::kU16:
    case GgufValueType::kI16:
      return 2;
    case GgufValueType::kU32:
    case GgufValueType::kI32:
    case GgufValueType::kF32:
      return 4;
    case GgufValueType::kU64:
    case GgufValueType::kI64:
    case GgufValueType::kF64:
      return 8;
    default:
      return 0;  // string / array: variable
  }
}

// Reads the header with a bound check on every field: a hostile count or length runs into
// the end of the file and fails there, before anything is allocated for it.
class Cursor {
 public:
  Cursor(const uint8_t* p, size_t size, const std::string& path)
      : p_(p), size_(size), path_(path) {}
  size_t pos() const { return pos_; }
  size_t left() const { return size_ - pos_; }
  template <class T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string string(const char* what, uint64_t max_len) {
    const uint64_t n = read<uint64_t>(what);
    if (n > max_len) fail("'{}': {} is {} bytes long (at most {})", path_, what, n, max_len);
    need(n, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), size_t(n));
    pos_ += size_t(n);
    return s;
  }
  void need(uint64_t n, const char* what) const {
    if (n > left())
      fail("'{}': {} runs past the end of the file (byte {} of {}): truncated?", path_, what, pos_,
           size_);
  }

 private:
  const uint8_t* p_;
  size_t size_, pos_ = 0;
  const std::string& path_;
};

void read_scalar(Cursor& c, GgufValueType t, GgufValue& v, const std::string& path,
                 const std::string& key) {
  v.type = t;
  switch (t) {
    case GgufValueType::kU8:
      v.i = c.read<uint8_t>("a value");
      break;
    case GgufValueType::kI8:
      v.i = c.read<int8_t>("a value");
      break;
    case GgufValueType::kU16:
      v.i = c.read<uint16_t>("a value");
      break;
    case GgufValueType::kI16:
      v.i = c.read<int16_t>("a value");
      break;
    case GgufValueType::kU32:
      v.i = c.read<uint32_t>("a value");
      break;
    case GgufValueType::kI32:
      v.i = c.read<int32_t>("a value");
      break;
    case GgufValueType::kI64:
      v.i = c.read<int64_t>("a value");
      break;
    case GgufValueType::kU64:
      v.u = c.read<uint64_t>("a value");
      v.i = v.u > uint64_t(std::numeric_limits<int64_t>::max()) ? -1 : int64_t(v.u);
      break;
    case GgufValueType::kF32:
      v.f = c.read<float>("a value");
      break;
    case GgufValueType::kF64:
      v.f = c.read<double>("a value");
      break;
    case GgufValueType::kBool: {
      const uint8_t b = c.read<uint8_t>("a value");
      if (b > 1) fail("'{}': key '{}': bool value {} is neither 0 nor 1", path, key, b);
      v.i = b;
      break;
    }
    case GgufValueType::kString:
      v.s = c.string("a string value", std::numeric_limits<uint64_t>::max());
      break;
    default:
      fail("'{}': key '{}' has value type {}, not a scalar", path, key, uint32_t(t));
  }
  if (t != GgufValueType::kU64) v.u = uint64_t(v.i);
}

GgufValueType value_type(uint32_t raw, const std::string& path, const std::string& key) {
  if (raw > uint32_t(GgufValueType::kF64))
    fail("'{}': key '{}' has unknown value type {}", path, key, raw);
  return GgufValueType(raw);
}

}  // namespace

const char* gguf_value_type_name(GgufValueType t) {
  static const char* const kNames[] = {"u8",   "i8",     "u16",   "i16", "u32", "i32", "f32",
                                       "bool", "string", "array", "u64", "i64", "f64"};
  return uint32_t(t) <= uint32_t(GgufValueType::kF64) ? kNames[uint32_t(t)] : "unknown";
}

bool GgufValue::is_integer() const {
  return type != GgufValueType::kF32 && type != GgufValueType::kF64 &&
         type != GgufValueType::kString && type != GgufValueType::kArray &&
         type != GgufValueType::kBool;
}

int64_t GgufTensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : dims) n *= d;
  return n;
}

GgufFile::GgufFile(const std::string& path) : path_(path), map_(path), size_(map_.size()) {
  if (size_ < 24)
    fail("'{}' is not a GGUF file: {} bytes, shorter than the 24-byte header", path, size_);
  const auto* bytes = map_.data();
  Cursor c(bytes, size_, path_);
  if (c.read<uint32_t>("the magic") != kMagic)
    fail("'{}' is not a GGUF file (no GGUF magic)", path);
  version_ = c.read<uint32_t>("the version");
  if (version_ == 1) fail("'{}' is GGUF version 1, which is no longer supported", path);
  if (version_ != 2 && version_ != 3)
    fail("'{}' has GGUF version {}; versions 2 and 3 are supported", path, version_);
  const uint64_t n_tensors = c.read<uint64_t>("the tensor count");
  const uint64_t n_kv = c.read<uint64_t>("the key-value count");
  // Every pair takes at least 13 bytes and every tensor info at least 24: absurd counts
  // fail here rather than after a huge allocation.
  if (n_kv > c.left() / 13 || n_tensors > c.left() / 24)
    fail("'{}': {} key-value pairs and {} tensors cannot fit in a {}-byte file", path, n_kv,
         n_tensors, size_);

  for (uint64_t k = 0; k < n_kv; ++k) {
    std::string key = c.string("a metadata key", kMaxKeyBytes);
    if (key.empty()) fail("'{}': metadata key {} is empty", path, k);
    if (metadata_.count(key)) fail("'{}': metadata key '{}' appears twice", path, key);
    GgufValue v;
    const GgufValueType t = value_type(c.read<uint32_t>("a value type"), path, key);
    if (t == GgufValueType::kArray) {
      v.type = t;
      const uint32_t raw = c.read<uint32_t>("an array's element type");
      v.element = value_type(raw, path, key);
      if (v.element == GgufValueType::kArray)
        fail("'{}': key '{}' is an array of arrays, which GGUF does not allow", path, key);
      const uint64_t n = c.read<uint64_t>("an array's length");
      const size_t each = v.element == GgufValueType::kString ? 8 : value_size(v.element);
      if (n > c.left() / each)
        fail("'{}': key '{}': an array of {} {} values runs past the end of the file", path, key, n,
             gguf_value_type_name(v.element));
      if (v.element == GgufValueType::kString) {
        v.strings.reserve(size_t(n));
        for (uint64_t i = 0; i < n; ++i)
          v.strings.push_back(
              c.string("a string in an array", std::numeric_limits<uint64_t>::max()));
      } else {
        v.numbers.reserve(size_t(n));
        GgufValue e;
        for (uint64_t i = 0; i < n; ++i) {
          read_scalar(c, v.element, e, path, key);
          v.numbers.push_back(e.type == GgufValueType::kU64 ? double(e.u)
                              : e.is_float()                ? e.f
                                                            : double(e.i));
        }
      }
    } else {
      read_scalar(c, t, v, path, key);
    }
    metadata_.emplace(std::move(key), std::move(v));
  }
  if (auto it = metadata_.find("general.alignment"); it != metadata_.end()) {
    const GgufValue& a = it->second;
    if (a.type != GgufValueType::kU32)
      fail("'{}': general.alignment is {}; it must be u32", path, gguf_value_type_name(a.type));
    if (a.i == 0 || (a.i & (a.i - 1)) != 0)
      fail("'{}': general.alignment {} is not a power of two", path, a.i);
    alignment_ = uint32_t(a.i);
  }

  struct Pending {
    GgufTensorInfo info;
    uint64_t relative = 0;
  };
  std::vector<Pending> pending;
  pending.reserve(size_t(n_tensors));
  for (uint64_t k = 0; k < n_tensors; ++k) {
    Pending p;
    GgufTensorInfo& t = p.info;
    t.name = c.string("a tensor name", std::numeric_limits<uint64_t>::max());
    if (t.name.empty()) fail("'{}': tensor {} has an empty name", path, k);
    if (t.name.size() > kMaxTensorName)
      fail("'{}': tensor name '{}...' is longer than {} bytes", path, t.name.substr(0, 40),
           kMaxTensorName);
    if (tensor_index_.count(t.name)) fail("'{}': tensor '{}' appears twice", path, t.name);
    const uint32_t n_dims = c.read<uint32_t>("a tensor's dimension count");
    if (n_dims == 0 || n_dims > uint32_t(kMaxDims))
      fail("'{}': tensor '{}' has {} dimensions (1 to {} allowed)", path, t.name, n_dims, kMaxDims);
    unsigned __int128 numel = 1;
    for (uint32_t d = 0; d < n_dims; ++d) {
      const int64_t n = c.read<int64_t>("a tensor dimension");
      if (n < 0) fail("'{}': tensor '{}' has a negative dimension {}", path, t.name, n);
      t.dims.push_back(n);
      numel *= uint64_t(n);
      if (numel > uint64_t(std::numeric_limits<int64_t>::max()))
        fail("'{}': tensor '{}' has more than 2^63 elements", path, t.name);
    }
    const uint32_t raw_type = c.read<uint32_t>("a tensor type");
    const auto traits = ggml_type_traits(raw_type);
    if (!traits) fail("'{}': tensor '{}' has unknown ggml type {}", path, t.name, raw_type);
    t.type = GgmlType(raw_type);
    if (t.dims[0] % traits->block != 0)
      fail(
          "'{}': tensor '{}' ({}) has a row of {} elements, not a multiple of the type's block "
          "of {}",
          path, t.name, traits->name, t.dims[0], traits->block);
    const unsigned __int128 nbytes = numel / uint64_t(traits->block) * traits->block_bytes;
    if (nbytes > size_)
      fail("'{}': tensor '{}' needs {} bytes, more than the whole file", path, t.name,
           uint64_t(nbytes));
    t.nbytes = size_t(nbytes);
    p.relative = c.read<uint64_t>("a tensor offset");
    if (p.relative % alignment_ != 0)
      fail("'{}': tensor '{}' starts at offset {}, not a multiple of the alignment {}", path,
           t.name, p.relative, alignment_);
    tensor_index_.emplace(t.name, pending.size());
    pending.push_back(std::move(p));
  }

  const uint64_t data_start = (uint64_t(c.pos()) + alignment_ - 1) / alignment_ * alignment_;
  if (n_tensors > 0 && data_start > size_)
    fail("'{}': the tensor data would start at byte {}, past the end of the file ({} bytes)", path,
         data_start, size_);
  // Tensors must lie inside the file and must not overlap.
  std::vector<std::pair<uint64_t, size_t>> spans;  // (begin, index)
  for (size_t i = 0; i < pending.size(); ++i) {
    GgufTensorInfo& t = pending[i].info;
    const uint64_t begin = data_start + pending[i].relative;
    if (pending[i].relative > size_ || begin > size_ || t.nbytes > size_ - begin)
      fail(
          "'{}': tensor '{}' ({} bytes at data offset {}) runs past the end of the file ({} "
          "bytes): truncated?",
          path, t.name, t.nbytes, pending[i].relative, size_);
    t.offset = begin;
    t.data = bytes + begin;
    spans.emplace_back(begin, i);
  }
  std::sort(spans.begin(), spans.end());
  for (size_t k = 1; k < spans.size(); ++k) {
    const GgufTensorInfo& prev = pending[spans[k - 1].second].info;
    if (prev.offset + prev.nbytes > spans[k].first)
      fail("'{}': tensors '{}' and '{}' overlap", path, prev.name,
           pending[spans[k].second].info.name);
  }
  tensors_.reserve(pending.size());
  for (Pending& p : pending) tensors_.push_back(std::move(p.info));
}

GgufFile::~GgufFile() = default;

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  auto it = tensor_index_.find(name);
  return it == tensor_index_.end() ? nullptr : &tensors_[it->second];
}

const GgufValue* GgufFile::find(const std::string& key) const {
  auto it = metadata_.find(key);
  return it == metadata_.end() ? nullptr : &it->second;
}

namespace {
const GgufValue& require(const GgufFile& f, const std::string& key) {
  const GgufValue* v = f.find(key);
  if (!v) fail("'{}' has no metadata key '{}'", f.path(), key);
  return *v;
}
[[noreturn]] void wrong_type(const GgufFile& f, const std::string& key, const GgufValue& v,
                             const char* want) {
  fail("'{}': metadata key '{}' is {}; expected {}", f.path(), key, gguf_value_type_name(v.type),
       want);
}
}  // namespace

std::optional<uint64_t> GgufFile::uint_or_none(const std::string& key) const {
  if (!find(key)) return std::nullopt;
  return get_uint(key);
}

uint64_t GgufFile::get_uint(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (!v.is_integer()) wrong_type(*this, key, v, "an unsigned integer");
  if (v.type != GgufValueType::kU64 && v.i < 0)
    fail("'{}': metadata key '{}' is {}; expected a non-negative integer", path_, key, v.i);
  return v.u;
}

std::optional<double> GgufFile::float_or_none(const std::string& key) const {
  if (!find(key)) return std::nullopt;
  return get_float(key);
}

double GgufFile::get_float(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (!v.is_float()) wrong_type(*this, key, v, "f32 or f64");
  return v.f;
}

bool GgufFile::get_bool(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::kBool) wrong_type(*this, key, v, "bool");
  return v.i != 0;
}

const std::string& GgufFile::get_string(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::kString) wrong_type(*this, key, v, "a string");
  return v.s;
}

const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::kArray || v.element != GgufValueType::kString)
    wrong_type(*this, key, v, "an array of strings");
  return v.strings;
}

const std::vector<double>& GgufFile::get_numbers(const std::string& key) const {
  const GgufValue& v = require(*this, key);
  if (v.type != GgufValueType::kArray || v.element == GgufValueType::kString)
    wrong_type(*this, key, v, "an array of numbers");
  return v.numbers;
}

// --- writer -------------------------------------------------------------------------------

namespace {
template <class T>
void put(std::string& out, T v) {
  out.append(reinterpret_cast<const char*>(&v), sizeof(T));
}
void put_string(std::string& out, const std::string& s) {
  put<uint64_t>(out, s.size());
  out += s;
}
}  // namespace

void GgufWriter::put_key(const std::string& key, GgufValueType type) {
  put_string(kv_, key);
  put<uint32_t>(kv_, uint32_t(type));
  ++kv_count_;
}
void GgufWriter::set_uint32(const std::string& key, uint32_t v) {
  put_key(key, GgufValueType::kU32);
  put(kv_, v);
}
void GgufWriter::set_uint64(const std::string& key, uint64_t v) {
  put_key(key, GgufValueType::kU64);
  put(kv_, v);
}
void GgufWriter::set_int32(const std::string& key, int32_t v) {
  put_key(key, GgufValueType::kI32);
  put(kv_, v);
}
void GgufWriter::set_float32(const std::string& key, float v) {
  put_key(key, GgufValueType::kF32);
  put(kv_, v);
}
void GgufWriter::set_bool(const std::string& key, bool v) {
  put_key(key, GgufValueType::kBool);
  put<uint8_t>(kv_, v ? 1 : 0);
}
void GgufWriter::set_string(const std::string& key, const std::string& v) {
  put_key(key, GgufValueType::kString);
  put_string(kv_, v);
}
void GgufWriter::set_strings(const std::string& key, const std::vector<std::string>& v) {
  put_key(key, GgufValueType::kArray);
  put<uint32_t>(kv_, uint32_t(GgufValueType::kString));
  put<uint64_t>(kv_, v.size());
  for (const std::string& s : v) put_string(kv_, s);
}
void GgufWriter::set_float32s(const std::string& key, const std::vector<float>& v) {
  put_key(key, GgufValueType::kArray);
  put<uint32_t>(kv_, uint32_t(GgufValueType::kF32));
  put<uint64_t>(kv_, v.size());
  for (float x : v) put(kv_, x);
}
void GgufWriter::set_int32s(const std::string& key, const std::vector<int32_t>& v) {
  put_key(key, GgufValueType::kArray);
  put<uint32_t>(kv_, uint32_t(GgufValueType::kI32));
  put<uint64_t>(kv_, v.size());
  for (int32_t x : v) put(kv_, x);
}

void GgufWriter::check_tensor(const std::string& name, GgmlType type,
                              const std::vector<int64_t>& dims) const {
  const auto traits = ggml_type_traits(uint32_t(type));
  SY_ASSERT_MSG(
      traits && !dims.empty() && dims.size() <= size_t(kMaxDims) && dims[0] % traits->block == 0,
      "GgufWriter::add_tensor: bad type or dims");
  if (name.empty() || name.size() > kMaxTensorName)
    fail("GGUF tensor name '{}' must be 1 to {} bytes", name, kMaxTensorName);
  for (const Tensor& t : tensors_)
    if (t.name == name) fail("GGUF tensor '{}' added twice", name);
}

size_t GgufWriter::tensor_bytes(GgmlType type, const std::vector<int64_t>& dims) const {
  const auto traits = ggml_type_traits(uint32_t(type));
  int64_t numel = 1;
  for (int64_t d : dims) numel *= d;
  return size_t(numel / traits->block) * traits->block_bytes;
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type,
                            const std::vector<int64_t>& dims, const void* bytes, size_t nbytes) {
  check_tensor(name, type, dims);
  if (tensor_bytes(type, dims) != nbytes)
    fail("GGUF tensor '{}': {} bytes given; {} needs {}", name, nbytes,
         ggml_type_traits(uint32_t(type))->name, tensor_bytes(type, dims));
  auto copy = std::make_shared<std::string>(static_cast<const char*>(bytes), nbytes);
  tensors_.push_back({name, type, dims, nbytes, [copy](std::string& out) { out += *copy; }});
}

void GgufWriter::add_tensor(const std::string& name, GgmlType type,
                            const std::vector<int64_t>& dims, TensorProducer produce) {
  check_tensor(name, type, dims);
  tensors_.push_back({name, type, dims, tensor_bytes(type, dims), std::move(produce)});
}

std::string GgufWriter::head() const {
  std::string out;
  put<uint32_t>(out, kMagic);
  put<uint32_t>(out, 3);
  put<uint64_t>(out, tensors_.size());
  put<uint64_t>(out, uint64_t(kv_count_));
  out += kv_;
  const auto pad = [&](uint64_t n) { return (n + alignment_ - 1) / alignment_ * alignment_; };
  uint64_t offset = 0;
  for (const Tensor& t : tensors_) {
    put_string(out, t.name);
    put<uint32_t>(out, uint32_t(t.dims.size()));
    for (int64_t d : t.dims) put<int64_t>(out, d);
    put<uint32_t>(out, uint32_t(t.type));
    put<uint64_t>(out, offset);
    offset = pad(offset + t.nbytes);
  }
  out.resize(size_t(pad(out.size())), '\0');
  return out;
}

void GgufWriter::stream(const std::function<void(const void*, size_t)>& sink) const {
  const std::string h = head();
  sink(h.data(), h.size());
  std::string data;  // one tensor at a time
  for (const Tensor& t : tensors_) {
    data.clear();
    t.produce(data);
    SY_ASSERT_MSG(data.size() == t.nbytes, "GgufWriter: a tensor producer wrote the wrong size");
    data.resize((data.size() + alignment_ - 1) / alignment_ * alignment_, '\0');
    sink(data.data(), data.size());
  }
}

std::string GgufWriter::serialize() const {
  std::string out;
  stream([&](const void* p, size_t n) { out.append(static_cast<const char*>(p), n); });
  return out;
}

void GgufWriter::write(const std::string& path) const {
  write_file_atomic_chunks(path, [&](const ChunkSink& sink) { stream(sink); });
}

}  // namespace sy::io
