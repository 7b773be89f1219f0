// safetensors reader, sharded TensorStore and atomic writer (src/io/safetensors.h).
// Malformed files are built byte by byte here (u64 LE header length, JSON header, buffer),
// never with the writer under test, and every one of them is one defect away from a file
// the reader accepts (the "control" cases below), so each rejection is for the stated reason.
// The writer is checked independently: its raw bytes are parsed here with nlohmann::json.
#include <gtest/gtest.h>

#include <stdlib.h>
#include "temp_dir.h"

#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/safetensors.h"
#include "util/dtype.h"
#include "util/error.h"

namespace sy::io {
namespace {

namespace fs = std::filesystem;
using json = nlohmann::json;

// A fresh directory per test, removed afterwards.
using sy::testing::TempDir;

std::string u64_le(uint64_t v) {
  std::string s(8, '\0');
  for (int i = 0; i < 8; ++i) s[size_t(i)] = char((v >> (8 * i)) & 0xff);
  return s;
}

// A safetensors image: header length, header text, then `buffer_bytes` bytes (0, 1, 2, ...).
std::string st_image(const std::string& header, size_t buffer_bytes) {
  std::string s = u64_le(header.size()) + header;
  for (size_t i = 0; i < buffer_bytes; ++i) s.push_back(char(i & 0xff));
  return s;
}

void write_raw(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), std::streamsize(bytes.size()));
  ASSERT_TRUE(out.good()) << "cannot write " << path;
}

std::string read_raw(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

// Runs `fn`, expects sy::Error whose message contains every string in `needles`.
void expect_error(const std::function<void()>& fn, const std::vector<std::string>& needles,
                  const std::string& what) {
  try {
    fn();
  } catch (const Error& e) {
    const std::string msg = e.what();
    for (const auto& n : needles)
      EXPECT_NE(msg.find(n), std::string::npos)
          << what << ": message does not mention \"" << n << "\"\n  message: " << msg;
    return;
  } catch (const std::exception& e) {
    ADD_FAILURE() << what << ": threw a non-sy::Error exception: " << e.what();
    return;
  }
  ADD_FAILURE() << what << ": no exception; the file was accepted";
}

// One-tensor header entry.
std::string entry(const std::string& name, const std::string& dtype, const std::string& shape,
                  uint64_t begin, uint64_t end) {
  return "\"" + name + "\":{\"dtype\":\"" + dtype + "\",\"shape\":" + shape +
         ",\"data_offsets\":[" + std::to_string(begin) + "," + std::to_string(end) + "]}";
}

struct ImageCase {
  const char* name;
  std::string header;
  size_t buffer_bytes;
  const char* tensor;  // tensor the message must name, or nullptr
};

// Files the reader must accept; each malformed case below differs from one of them in one way.
TEST(Safetensors, HandBuiltValidFilesLoad) {
  const std::vector<ImageCase> valid = {
      {"two F32 tensors",
       "{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[2]", 8, 16) + "}", 16,
       nullptr},
      {"listed out of offset order",
       "{" + entry("b", "F32", "[2]", 8, 16) + "," + entry("a", "F32", "[2]", 0, 8) + "}", 16,
       nullptr},
      {"header padded with spaces", "{" + entry("a", "F32", "[2]", 0, 8) + "}      ", 8, nullptr},
      {"metadata and zero-size tensors",
       "{\"__metadata__\":{\"format\":\"pt\"}," + entry("z", "F32", "[0,4]", 0, 0) + "," +
           entry("a", "BF16", "[2,2]", 0, 8) + "," + entry("y", "I64", "[3,0]", 8, 8) + "}",
       8, nullptr},
      {"scalar", "{" + entry("s", "F64", "[]", 0, 8) + "}", 8, nullptr},
      {"no tensors", "{}", 0, nullptr},
      {"sub-byte dtype F4 with whole bytes", "{" + entry("q", "F4", "[2,3]", 0, 3) + "}", 3,
       nullptr},
  };
  TempDir dir;
  for (const auto& c : valid) {
    const std::string path = dir.file("valid.safetensors");
    write_raw(path, st_image(c.header, c.buffer_bytes));
    try {
      SafetensorsFile f(path);
      EXPECT_EQ(f.file_size(), 8 + c.header.size() + c.buffer_bytes) << c.name;
    } catch (const std::exception& e) {
      ADD_FAILURE() << c.name << ": rejected a valid file: " << e.what();
    }
  }
}

TEST(Safetensors, MalformedHeadersNameFileAndTensor) {
  const std::string a8 = entry("a", "F32", "[2]", 0, 8);
  const std::vector<ImageCase> cases = {
      {"gap between tensors", "{" + a8 + "," + entry("b", "F32", "[2]", 12, 20) + "}", 20, "b"},
      {"overlapping tensors", "{" + a8 + "," + entry("b", "F32", "[2]", 4, 12) + "}", 12, "b"},
      {"first tensor not at 0", "{" + entry("a", "F32", "[2]", 4, 12) + "}", 12, "a"},
      {"size != numel x dtype", "{" + entry("a", "F32", "[3]", 0, 8) + "}", 8, "a"},
      {"size != numel x dtype (bf16)", "{" + entry("w", "BF16", "[2,2]", 0, 16) + "}", 16, "w"},
      {"end before begin", "{" + entry("a", "F32", "[0]", 8, 0) + "}", 8, "a"},
      {"unknown dtype", "{" + entry("a", "F12", "[2]", 0, 8) + "}", 8, "a"},
      {"duplicate tensor key", "{" + a8 + "," + entry("a", "F32", "[2]", 8, 16) + "}", 16, "a"},
      {"negative dimension", "{" + entry("a", "F32", "[-2]", 0, 8) + "}", 8, "a"},
      {"dtype not a string", "{\"a\":{\"dtype\":32,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "a"},
      {"missing data_offsets", "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "a"},
      {"sub-byte total", "{" + entry("q", "F4", "[3]", 0, 1) + "}", 1, "q"},
      {"data past end of buffer", "{" + entry("a", "F32", "[4]", 0, 16) + "}", 12, "a"},
      // numel = 2^48 * 2^48 * 2^32 = 2^128: wraps to 0 in 128-bit arithmetic, so a zero-byte
      // span would "match". The reference parser uses checked multiplication and rejects it.
      {"element count overflows",
       "{" + entry("a", "F32", "[281474976710656,281474976710656,4294967296]", 0, 0) + "}", 0, "a"},
      {"file longer than the tensors", "{" + a8 + "}", 12, nullptr},
      {"not JSON", "{\"a\": {\"dtype\": \"F32\", ", 8, nullptr},
      {"header does not start with '{'", " {" + a8 + "}", 8, nullptr},
      {"header is an array", "[" + a8 + "]", 8, nullptr},
      {"metadata value not a string", "{\"__metadata__\":{\"n\":1}," + a8 + "}", 8, nullptr},
  };
  TempDir dir;
  for (const auto& c : cases) {
    const std::string path = dir.file("bad.safetensors");
    write_raw(path, st_image(c.header, c.buffer_bytes));
    std::vector<std::string> needles = {path};
    if (c.tensor) needles.push_back(std::string("'") + c.tensor + "'");
    expect_error([&] { SafetensorsFile f(path); }, needles, c.name);
  }
}

TEST(Safetensors, TruncatedFilesNameTheFile) {
  TempDir dir;
  const std::string header = "{" + entry("a", "F32", "[4]", 0, 16) + "}";
  const std::string good = st_image(header, 16);
  struct Cut {
    const char* name;
    std::string bytes;
  };
  const std::vector<Cut> cuts = {
      {"empty file", ""},
      {"3 bytes of the length", good.substr(0, 3)},
      {"header cut in the middle", good.substr(0, 8 + header.size() / 2)},
      {"buffer cut short", good.substr(0, good.size() - 4)},
      {"header length beyond the file", u64_le(50'000'000) + header},
  };
  for (const auto& c : cuts) {
    const std::string path = dir.file("cut.safetensors");
    write_raw(path, c.bytes);
    expect_error([&] { SafetensorsFile f(path); }, {path}, c.name);
  }
  write_raw(dir.file("good.safetensors"), good);
  EXPECT_NO_THROW(SafetensorsFile f(dir.file("good.safetensors")));
  expect_error([&] { SafetensorsFile f(dir.file("absent.safetensors")); },
               {dir.file("absent.safetensors")}, "missing file");
}

// The limit applies to the length field itself: a sparse file really holding 100,000,001
// header bytes is still rejected for its length, while exactly 100,000,000 is allowed.
TEST(Safetensors, HeaderLengthLimit) {
  TempDir dir;
  const uint64_t limit = 100'000'000;
  const std::string over = dir.file("over.safetensors");
  write_raw(over, u64_le(limit + 1) + "{}");
  fs::resize_file(over, 8 + limit + 1);  // sparse: the header length is not a lie
  expect_error([&] { SafetensorsFile f(over); }, {over, "100000000"}, "header length limit + 1");

  const std::string at = dir.file("at_limit.safetensors");
  {
    std::string bytes = u64_le(limit) + "{}";
    bytes.resize(8 + limit, ' ');  // a valid header, right-padded with spaces
    write_raw(at, bytes);
  }
  try {
    SafetensorsFile f(at);
    EXPECT_TRUE(f.tensors().empty());
  } catch (const std::exception& e) {
    ADD_FAILURE() << "a header of exactly the limit was rejected: " << e.what();
  }
}

// --- writer ----------------------------------------------------------------------------------

struct Tensor {
  std::string name, dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> bytes;
};

std::vector<uint8_t> pattern(size_t n, uint8_t seed) {
  std::vector<uint8_t> v(n);
  for (size_t i = 0; i < n; ++i) v[i] = uint8_t(seed + 37 * i);
  return v;
}

std::vector<Tensor> sample_tensors() {
  std::vector<Tensor> ts;
  {
    std::vector<float> f = {1.5f, -2.0f, 3.25f, 0.0f, -0.0f, 1e-30f};
    Tensor t{"model.layers.0.w", "F32", {2, 3}, std::vector<uint8_t>(24)};
    std::memcpy(t.bytes.data(), f.data(), 24);
    ts.push_back(t);
  }
  {
    Tensor t{"half", "F16", {4}, {}};
    for (float v : {1.0f, -0.5f, 65504.0f, 6.1e-5f}) {
      uint16_t h = f32_to_f16(v);
      t.bytes.push_back(uint8_t(h & 0xff));
      t.bytes.push_back(uint8_t(h >> 8));
    }
    ts.push_back(t);
  }
  ts.push_back({"brain", "BF16", {3, 1}, pattern(6, 7)});
  {
    std::vector<int64_t> ids = {-1, 0, int64_t(1) << 40};
    Tensor t{"ids", "I64", {3}, std::vector<uint8_t>(24)};
    std::memcpy(t.bytes.data(), ids.data(), 24);
    ts.push_back(t);
  }
  {
    // I32 as routing traces store expert ids (kDroppedExpert = -1 included).
    std::vector<int32_t> ids = {-1, 0, 7, INT32_MAX, INT32_MIN, 63};
    Tensor t{"layer.0.ids", "I32", {3, 2}, std::vector<uint8_t>(24)};
    std::memcpy(t.bytes.data(), ids.data(), 24);
    ts.push_back(t);
  }
  ts.push_back({"scalar", "F32", {}, pattern(4, 99)});
  ts.push_back({"empty", "F32", {0, 5}, {}});
  ts.push_back({"tail", "BF16", {5}, pattern(10, 3)});  // odd-sized buffer after the empty one
  return ts;
}

std::vector<TensorToWrite> to_write(const std::vector<Tensor>& ts) {
  std::vector<TensorToWrite> out;
  for (const auto& t : ts)
    out.push_back({t.name, t.dtype, t.shape, t.bytes.data(), t.bytes.size()});
  return out;
}

TEST(Safetensors, WriteThenReadRoundTrip) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const auto tensors = sample_tensors();
  write_safetensors(path, to_write(tensors), {{"format", "pt"}, {"note", "round trip"}});

  // Independent check of the bytes on disk.
  const std::string raw = read_raw(path);
  ASSERT_GE(raw.size(), 8u);
  uint64_t n = 0;
  for (int i = 0; i < 8; ++i) n |= uint64_t(uint8_t(raw[size_t(i)])) << (8 * i);
  ASSERT_LE(8 + n, raw.size());
  EXPECT_EQ(n % 8, 0u) << "header is not padded to a multiple of 8 bytes";
  const json header = json::parse(raw.substr(8, n));
  EXPECT_EQ(header["__metadata__"], json({{"format", "pt"}, {"note", "round trip"}}));
  size_t covered = 0;
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    ASSERT_TRUE(header.contains(t.name));
    const json& e = header[t.name];
    EXPECT_EQ(e["dtype"], t.dtype);
    EXPECT_EQ(e["shape"].get<std::vector<int64_t>>(), t.shape);
    const uint64_t begin = e["data_offsets"][0], end = e["data_offsets"][1];
    ASSERT_EQ(end - begin, t.bytes.size());
    ASSERT_LE(8 + n + end, raw.size());
    EXPECT_EQ(raw.substr(8 + n + begin, end - begin), std::string(t.bytes.begin(), t.bytes.end()));
    covered += t.bytes.size();
  }
  EXPECT_EQ(8 + n + covered, raw.size());

  // And through the reader.
  SafetensorsFile f(path);
  EXPECT_EQ(f.metadata().at("note"), "round trip");
  ASSERT_EQ(f.tensors().size(), tensors.size());
  for (const auto& t : tensors) {
    SCOPED_TRACE(t.name);
    const TensorInfo* got = nullptr;
    for (const auto& info : f.tensors())
      if (info.name == t.name) got = &info;
    ASSERT_NE(got, nullptr);
    EXPECT_EQ(got->dtype_name, t.dtype);
    EXPECT_EQ(got->shape, t.shape);
    EXPECT_EQ(got->file, path);
    EXPECT_EQ(got->nbytes, t.bytes.size());
    int64_t numel = 1;
    for (auto d : t.shape) numel *= d;
    EXPECT_EQ(got->numel(), numel);
    if (!t.bytes.empty()) {
      EXPECT_EQ(std::memcmp(got->data, t.bytes.data(), t.bytes.size()), 0);
    }
    const bool computable = t.dtype == "F32" || t.dtype == "F16" || t.dtype == "BF16";
    EXPECT_EQ(got->dtype.has_value(), computable);
  }
  const auto find = [&](const std::string& name) {
    for (const auto& info : f.tensors())
      if (info.name == name) return info;
    return TensorInfo{};
  };
  EXPECT_EQ(find("scalar").shape_str(), "[]");
  EXPECT_EQ(find("scalar").numel(), 1);
  EXPECT_EQ(find("empty").numel(), 0);
  EXPECT_EQ(find("model.layers.0.w").shape_str(), "[2, 3]");
  EXPECT_EQ(*find("half").dtype, DType::F16);
  EXPECT_EQ(*find("brain").dtype, DType::BF16);
  const TensorInfo i32 = find("layer.0.ids");
  EXPECT_EQ(i32.shape_str(), "[3, 2]");
  ASSERT_EQ(i32.nbytes, 24u);
  int32_t ids[6];
  std::memcpy(ids, i32.data, 24);
  EXPECT_EQ(ids[0], -1);
  EXPECT_EQ(ids[3], INT32_MAX);
  EXPECT_EQ(ids[4], INT32_MIN);
}

TEST(Safetensors, WriteIntoMissingDirectoryLeavesNothing) {
  TempDir dir;
  const std::string missing = dir.file("no_such_dir");
  const std::string path = missing + "/model.safetensors";
  const auto tensors = sample_tensors();
  expect_error([&] { write_safetensors(path, to_write(tensors)); }, {path}, "missing directory");
  EXPECT_FALSE(fs::exists(missing));
  EXPECT_TRUE(fs::is_empty(dir.path())) << "a temporary or partial file was left in " << dir.path();
}

TEST(Safetensors, FailedWriteKeepsTheExistingFile) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  const std::string before = st_image("{" + entry("a", "F32", "[2]", 0, 8) + "}", 8);
  write_raw(path, before);
  auto tensors = sample_tensors();
  tensors.push_back(tensors.front());  // the same name twice: rejected
  expect_error([&] { write_safetensors(path, to_write(tensors)); }, {tensors.front().name},
               "duplicate tensor in write");
  EXPECT_EQ(read_raw(path), before);
  size_t entries = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path())) ++entries;
  EXPECT_EQ(entries, 1u) << "a temporary file was left behind";
}

// --- sharded store ---------------------------------------------------------------------------

void write_index(const TempDir& dir, const json& weight_map) {
  json index = {{"metadata", {{"total_size", 0}}}, {"weight_map", weight_map}};
  write_raw(dir.file("model.safetensors.index.json"), index.dump());
}

TEST(TensorStore, SingleFile) {
  TempDir dir;
  write_raw(dir.file("model.safetensors"), st_image("{" + entry("x", "F32", "[2]", 0, 8) + "," +
                                                        entry("y", "BF16", "[3]", 8, 14) + "}",
                                                    14));
  TensorStore store = TensorStore::open(dir.path());
  EXPECT_EQ(store.all().size(), 2u);
  EXPECT_EQ(store.total_bytes(), 14u);
  EXPECT_EQ(store.get("y").shape, std::vector<int64_t>{3});
  EXPECT_EQ(static_cast<const uint8_t*>(store.get("y").data)[0], 8);  // buffer byte 8
  EXPECT_EQ(store.find("z"), nullptr);
  expect_error([&] { store.get("z"); }, {"'z'", dir.path()}, "missing tensor");
}

TEST(TensorStore, ShardsFollowTheIndex) {
  TempDir dir;
  write_raw(
      dir.file("model-00001-of-00002.safetensors"),
      st_image("{" + entry("a", "F32", "[2]", 0, 8) + "," + entry("b", "F32", "[1]", 8, 12) + "}",
               12));
  write_raw(dir.file("model-00002-of-00002.safetensors"),
            st_image("{" + entry("c", "F16", "[2]", 0, 4) + "}", 4));
  write_index(dir, {{"a", "model-00001-of-00002.safetensors"},
                    {"b", "model-00001-of-00002.safetensors"},
                    {"c", "model-00002-of-00002.safetensors"}});
  TensorStore store = TensorStore::open(dir.path());
  EXPECT_EQ(store.all().size(), 3u);
  EXPECT_EQ(store.total_bytes(), 16u);
  EXPECT_EQ(store.get("c").file, dir.file("model-00002-of-00002.safetensors"));
  EXPECT_EQ(store.get("b").file, dir.file("model-00001-of-00002.safetensors"));
  EXPECT_EQ(static_cast<const uint8_t*>(store.get("b").data)[0], 8);
}

TEST(TensorStore, InconsistentShardsAreRejected) {
  const std::string s1 = "model-00001-of-00002.safetensors",
                    s2 = "model-00002-of-00002.safetensors";
  struct Case {
    const char* name;
    std::string shard1_header, shard2_header;
    json weight_map;
    std::vector<std::string> needles;  // besides the directory
  };
  const std::string a = entry("a", "F32", "[2]", 0, 8), c = entry("c", "F32", "[2]", 0, 8);
  const std::vector<Case> cases = {
      {"index maps a tensor to a shard lacking it",
       "{" + a + "}",
       "{" + c + "}",
       {{"a", s2}, {"c", s2}},
       {"'a'", s2}},
      {"index maps a tensor no shard has",
       "{" + a + "}",
       "{" + c + "}",
       {{"a", s1}, {"c", s2}, {"ghost", s2}},
       {"'ghost'", "index.json"}},
      {"tensor in two shards",
       "{" + a + "}",
       "{" + entry("a", "F32", "[2]", 0, 8) + "}",
       {{"a", s1}, {"c", s2}},
       {"'a'", s1, s2}},
      {"shard name with '/'",
       "{" + a + "}",
       "{" + c + "}",
       {{"a", s1}, {"c", "sub/" + s2}},
       {"sub/" + s2, "index.json"}},
      {"shard name '..'", "{" + a + "}", "{" + c + "}", {{"a", s1}, {"c", ".."}}, {"index.json"}},
      {"weight_map entry not a string",
       "{" + a + "}",
       "{" + c + "}",
       {{"a", s1}, {"c", 2}},
       {"'c'", "index.json"}},
      {"shard file missing",
       "{" + a + "}",
       "{" + c + "}",
       {{"a", s1}, {"c", "model-00003-of-00002.safetensors"}},
       {"model-00003-of-00002.safetensors"}},
  };
  for (const auto& k : cases) {
    TempDir dir;
    write_raw(dir.file(s1), st_image(k.shard1_header, 8));
    write_raw(dir.file(s2), st_image(k.shard2_header, 8));
    fs::create_directory(dir.file("sub"));
    write_raw(dir.file("sub/" + s2), st_image(k.shard2_header, 8));
    write_index(dir, k.weight_map);
    auto needles = k.needles;
    needles.push_back(dir.path());
    expect_error([&] { TensorStore::open(dir.path()); }, needles, k.name);
  }
}

TEST(TensorStore, DirectoryWithoutCheckpoint) {
  TempDir dir;
  expect_error([&] { TensorStore::open(dir.path()); }, {dir.path()}, "empty directory");
  expect_error([&] { TensorStore::open(dir.file("absent")); }, {dir.file("absent")},
               "missing directory");
  write_raw(dir.file("model.safetensors.index.json"), "{\"weight_map\": [1, 2]}");
  expect_error([&] { TensorStore::open(dir.path()); },
               {"model.safetensors.index.json", "weight_map"}, "index without a weight_map object");
}

}  // namespace
}  // namespace sy::io
