#include "io/safetensors.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <set>

#include "io/file_util.h"
#include "util/error.h"
#include "util/json_bounded.h"

namespace sy::io {
namespace {

constexpr uint64_t kMaxHeaderBytes = 100'000'000;  // the reference parser's limit
constexpr int kMaxHeaderDepth = 8;  // real headers nest 3 deep (tensor -> shape -> dims)

using json = nlohmann::json;

// Parses JSON and rejects duplicate keys in any object (the reference parser does too;
// nlohmann would silently keep the last one) and nesting deeper than kMaxHeaderDepth (checked
// while parsing: a hostile header cannot build a deep tree).
json parse_json_no_duplicates(const std::string& text, const std::string& what) {
  std::vector<std::set<std::string>> keys_per_depth;
  std::string duplicate;
  auto callback = [&](int depth, json::parse_event_t event, json& parsed) {
    if (depth > kMaxHeaderDepth)
      fail("{}: JSON nests deeper than {} levels", what, kMaxHeaderDepth);
    if (event == json::parse_event_t::object_start) {
      keys_per_depth.resize(size_t(depth) + 2);
      keys_per_depth[size_t(depth) + 1].clear();
    } else if (event == json::parse_event_t::key) {
      if (keys_per_depth.size() <= size_t(depth)) keys_per_depth.resize(size_t(depth) + 1);
      auto key = parsed.get<std::string>();
      if (!keys_per_depth[size_t(depth)].insert(key).second && duplicate.empty()) duplicate = key;
    }
    return true;
  };
  json j;
  try {
    j = json::parse(text, callback);
  } catch (const json::exception& e) {
    fail("{}: header is not valid JSON ({})", what, json_error_message(e));
  }
  if (!duplicate.empty()) fail("{}: header has the key {} twice", what, excerpt_text(duplicate));
  return j;
}

}  // namespace

std::optional<int> safetensors_dtype_bits(const std::string& d) {
  static const std::map<std::string, int> bits = {
      {"BOOL", 8},    {"U8", 8},          {"I8", 8},          {"F8_E5M2", 8}, {"F8_E4M3", 8},
      {"F8_E8M0", 8}, {"F8_E4M3FNUZ", 8}, {"F8_E5M2FNUZ", 8}, {"F4", 4},      {"F6_E2M3", 6},
      {"F6_E3M2", 6}, {"I16", 16},        {"U16", 16},        {"F16", 16},    {"BF16", 16},
      {"I32", 32},    {"U32", 32},        {"F32", 32},        {"C64", 64},    {"F64", 64},
      {"I64", 64},    {"U64", 64}};
  auto it = bits.find(d);
  if (it == bits.end()) return std::nullopt;
  return it->second;
}

int64_t TensorInfo::numel() const {
  int64_t n = 1;
  for (int64_t d : shape) n *= d;
  return n;
}

std::string TensorInfo::shape_str() const {
  std::string s = "[";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + "]";
}

SafetensorsFile::SafetensorsFile(const std::string& path)
    : path_(path), map_(path), size_(map_.size()) {
  if (size_ < 8)
    fail("'{}' is not a safetensors file: {} bytes, shorter than the 8-byte header length", path,
         size_);
  const auto* bytes = map_.data();
  uint64_t header_len = 0;
  std::memcpy(&header_len, bytes, 8);  // little-endian host (x86-64, aarch64)
  if (header_len > kMaxHeaderBytes)
    fail("'{}': header length {} exceeds the limit of {} bytes", path, header_len, kMaxHeaderBytes);
  if (header_len > size_ - 8)
    fail("'{}': header length {} runs past the end of the file ({} bytes): truncated?", path,
         header_len, size_);
  std::string header(reinterpret_cast<const char*>(bytes + 8), header_len);
  if (header.empty() || header[0] != '{') fail("'{}': header does not start with '{{'", path);
  json j = parse_json_no_duplicates(header, "'" + path + "'");
  if (!j.is_object()) fail("'{}': header is not a JSON object", path);

  const uint8_t* buffer = bytes + 8 + header_len;
  const size_t buffer_size = size_ - 8 - header_len;
  struct Span {
    size_t begin, end, index;
  };
  std::vector<Span> spans;
  for (auto& item : j.items()) {
    const std::string& name = item.key();
    auto& entry = item.value();
    if (name == "__metadata__") {
      if (!entry.is_object()) fail("'{}': __metadata__ is not an object", path);
      for (auto& [k, v] : entry.items()) {
        if (!v.is_string())
          fail("'{}': __metadata__ value of {} is not a string", path, excerpt_text(k));
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    auto bad = [&](const std::string& why) {
      fail("'{}': tensor {}: {}", path, excerpt_text(name, 160), why);
    };
    if (!entry.is_object()) bad("entry is not an object");
    if (!entry.contains("dtype") || !entry["dtype"].is_string()) bad("missing string 'dtype'");
    if (!entry.contains("shape") || !entry["shape"].is_array()) bad("missing array 'shape'");
    if (!entry.contains("data_offsets") || !entry["data_offsets"].is_array() ||
        entry["data_offsets"].size() != 2)
      bad("missing 'data_offsets' [begin, end]");
    TensorInfo t;
    t.name = name;
    t.file = path;
    t.dtype_name = entry["dtype"].get<std::string>();
    auto bits = safetensors_dtype_bits(t.dtype_name);
    if (!bits) bad("unknown dtype " + excerpt_text(t.dtype_name));
    if (t.dtype_name == "F32") t.dtype = DType::F32;
    if (t.dtype_name == "F16") t.dtype = DType::F16;
    if (t.dtype_name == "BF16") t.dtype = DType::BF16;
    unsigned __int128 numel = 1;
    for (auto& d : entry["shape"]) {
      if (!d.is_number_unsigned()) bad("shape has a non-integer or negative dimension");
      uint64_t v = d.get<uint64_t>();
      if (v > (uint64_t(1) << 48)) bad("shape dimension " + std::to_string(v) + " is absurd");
      t.shape.push_back(int64_t(v));
      numel *= v;
      if (numel > UINT64_MAX) bad("element count overflows 64 bits");  // no 128-bit wrap
    }
    for (auto& o : entry["data_offsets"])
      if (!o.is_number_unsigned()) bad("data_offsets must be non-negative integers");
    size_t begin = entry["data_offsets"][0].get<uint64_t>();
    size_t end = entry["data_offsets"][1].get<uint64_t>();
    if (end < begin) bad("data_offsets end < begin");
    unsigned __int128 nbits = numel * unsigned(*bits);
    if (nbits % 8 != 0) bad("element count times dtype bits is not a whole number of bytes");
    if (nbits / 8 != end - begin)
      bad(fmt::format("data_offsets span {} bytes but {} x {} needs {}", end - begin, t.dtype_name,
                      t.shape_str(), uint64_t(nbits / 8)));
    if (end > buffer_size)
      bad(fmt::format("data ends at byte {} of a {}-byte buffer: file truncated?", end,
                      buffer_size));
    t.data = buffer + begin;
    t.offset = 8 + header_len + begin;
    t.nbytes = end - begin;
    spans.push_back({begin, end, tensors_.size()});
    tensors_.push_back(std::move(t));
  }
  // The reference parser: sorted by offset the tensors tile the buffer exactly.
  std::sort(spans.begin(), spans.end(), [](const Span& a, const Span& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  size_t expected = 0;
  for (const Span& s : spans) {
    if (s.begin != expected)
      fail(
          "'{}': tensor '{}' starts at byte {} but the previous one ends at {} (offsets must be "
          "contiguous, without holes or overlap)",
          path, tensors_[s.index].name, s.begin, expected);
    expected = s.end;
  }
  if (expected != buffer_size)
    fail("'{}': tensors cover {} bytes but the file holds {} after the header", path, expected,
         buffer_size);
}

SafetensorsFile::~SafetensorsFile() = default;

TensorStore TensorStore::open(const std::string& dir) {
  namespace fs = std::filesystem;
  TensorStore store;
  store.dir_ = dir;
  if (!fs::is_directory(dir)) fail("model directory '{}' does not exist", dir);
  const std::string index_path = dir + "/model.safetensors.index.json";
  std::vector<std::string> files;
  std::map<std::string, std::string> expected_file;  // tensor -> shard, from the index
  if (file_exists(index_path)) {
    json index = parse_json_no_duplicates(read_text_file(index_path), "'" + index_path + "'");
    if (!index.contains("weight_map") || !index["weight_map"].is_object())
      fail("'{}': missing object 'weight_map'", index_path);
    std::set<std::string> unique;
    for (auto& [tensor, file] : index["weight_map"].items()) {
      if (!file.is_string())
        fail("'{}': weight_map[{}] is not a file name", index_path, excerpt_text(tensor, 160));
      std::string f = file.get<std::string>();
      if (f.find('/') != std::string::npos || f == "..")
        fail("'{}': shard name {} must be a plain file name", index_path, excerpt_text(f, 160));
      expected_file[tensor] = dir + "/" + f;
      if (unique.insert(f).second) files.push_back(dir + "/" + f);
    }
  } else if (file_exists(dir + "/model.safetensors")) {
    files.push_back(dir + "/model.safetensors");
  } else {
    fail("'{}' holds neither model.safetensors nor model.safetensors.index.json", dir);
  }
  for (const auto& f : files) {
    store.files_.push_back(std::make_unique<SafetensorsFile>(f));
    for (const auto& t : store.files_.back()->tensors()) {
      if (!store.by_name_.emplace(t.name, &t).second)
        fail("tensor '{}' appears in more than one shard ('{}' and '{}')", t.name,
             store.by_name_[t.name]->file, f);
    }
  }
  for (const auto& [tensor, file] : expected_file) {
    auto it = store.by_name_.find(tensor);
    if (it == store.by_name_.end())
      fail("'{}' maps tensor {} to '{}', which does not contain it", index_path,
           excerpt_text(tensor, 160), file);
    if (it->second->file != file)
      fail("'{}' maps tensor '{}' to '{}' but it is in '{}'", index_path, tensor, file,
           it->second->file);
  }
  return store;
}

TensorStore TensorStore::from_tensors(const std::string& origin, std::vector<TensorInfo> tensors,
                                      std::shared_ptr<const void> owner) {
  TensorStore store;
  store.dir_ = origin;
  store.owner_ = std::move(owner);
  for (TensorInfo& t : tensors) {
    store.infos_.push_back(std::make_unique<TensorInfo>(std::move(t)));
    const TensorInfo* info = store.infos_.back().get();
    if (!store.by_name_.emplace(info->name, info).second)
      fail("'{}': tensor '{}' appears twice", origin, info->name);
  }
  return store;
}

const TensorInfo* TensorStore::find(const std::string& name) const {
  auto it = by_name_.find(name);
  return it == by_name_.end() ? nullptr : it->second;
}

const TensorInfo& TensorStore::get(const std::string& name) const {
  const TensorInfo* t = find(name);
  if (!t) fail("checkpoint '{}' has no tensor '{}'", dir_, name);
  return *t;
}

size_t TensorStore::total_bytes() const {
  size_t n = 0;
  for (const auto& [name, t] : by_name_) n += t->nbytes;
  return n;
}

std::string serialize_safetensors(const std::vector<TensorToWrite>& tensors,
                                  const std::map<std::string, std::string>& metadata) {
  json header = json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  size_t offset = 0;
  for (const auto& t : tensors) {
    auto bits = safetensors_dtype_bits(t.dtype_name);
    SY_ASSERT_MSG(bits.has_value(), "unknown dtype in write_safetensors");
    int64_t numel = 1;
    for (int64_t d : t.shape) numel *= d;
    SY_ASSERT(size_t(numel) * size_t(*bits) / 8 == t.nbytes);
    if (header.contains(t.name)) fail("write_safetensors: tensor '{}' given twice", t.name);
    header[t.name] = {
        {"dtype", t.dtype_name}, {"shape", t.shape}, {"data_offsets", {offset, offset + t.nbytes}}};
    offset += t.nbytes;
  }
  std::string h = header.dump();
  while (h.size() % 8 != 0) h.push_back(' ');  // as the reference writer pads
  std::string bytes(8 + h.size() + offset, '\0');
  uint64_t n = h.size();
  std::memcpy(bytes.data(), &n, 8);
  std::memcpy(bytes.data() + 8, h.data(), h.size());
  size_t pos = 8 + h.size();
  for (const auto& t : tensors) {
    if (t.nbytes) std::memcpy(bytes.data() + pos, t.data, t.nbytes);
    pos += t.nbytes;
  }
  return bytes;
}

void write_safetensors(const std::string& path, const std::vector<TensorToWrite>& tensors,
                       const std::map<std::string, std::string>& metadata) {
  const std::string bytes = serialize_safetensors(tensors, metadata);
  write_file_atomic(path, bytes.data(), bytes.size());
}

}  // namespace sy::io
