// Drives Switchyard's GGUF reader, writer and block formats for tests/reference/test_gguf.sh:
//   sy_gguf dump IN.gguf DIR      metadata as DIR/meta.json, tensor infos as DIR/tensors.json,
//                                 every tensor dequantized to DIR/<name>.npy (float32)
//   sy_gguf write IN.npy OUT.gguf  writes the float32 matrix IN as F32, BF16, Q8_0 and Q4_0
//                                 tensors (quantized by Switchyard) plus sample metadata
#include <fmt/core.h>

#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "io/file_util.h"
#include "io/gguf.h"
#include "io/npy.h"
#include "util/error.h"
#include "util/quant_blocks.h"

namespace {

using nlohmann::json;
using sy::GgmlType;

json value_json(const sy::io::GgufValue& v) {
  using T = sy::io::GgufValueType;
  json j;
  j["type"] = sy::io::gguf_value_type_name(v.type);
  if (v.type == T::kArray) {
    j["element"] = sy::io::gguf_value_type_name(v.element);
    if (v.element == T::kString)
      j["value"] = v.strings;
    else
      j["value"] = v.numbers;
  } else if (v.type == T::kString) {
    j["value"] = v.s;
  } else if (v.is_float()) {
    j["value"] = v.f;
  } else if (v.type == T::kBool) {
    j["value"] = v.i != 0;
  } else if (v.type == T::kU64) {
    j["value"] = v.u;
  } else {
    j["value"] = v.i;
  }
  return j;
}

int dump(const std::string& in, const std::string& dir) {
  const sy::io::GgufFile f(in);
  json meta = json::object(), tensors = json::array();
  for (const auto& [k, v] : f.metadata()) meta[k] = value_json(v);
  for (const sy::io::GgufTensorInfo& t : f.tensors()) {
    tensors.push_back({{"name", t.name},
                       {"dims", t.dims},
                       {"type", sy::ggml_type_name(t.type)},
                       {"offset", t.offset},
                       {"nbytes", t.nbytes}});
    std::vector<float> x(static_cast<size_t>(t.numel()));
    sy::dequantize_row(t.type, t.data, x.data(), t.numel());
    sy::io::write_npy_f32(dir + "/" + t.name + ".npy", x.data(), t.shape());
  }
  sy::io::write_text_file_atomic(dir + "/meta.json", meta.dump(1));
  sy::io::write_text_file_atomic(dir + "/tensors.json", tensors.dump(1));
  return 0;
}

// A float32 C-order .npy matrix (what numpy.save writes for a 2-D float32 array).
std::vector<float> read_npy_matrix(const std::string& path, int64_t& rows, int64_t& cols) {
  const std::string b = sy::io::read_text_file(path);
  if (b.size() < 10 || b.compare(0, 6, "\x93NUMPY") != 0) sy::fail("'{}' is not a .npy file", path);
  uint16_t hlen;
  std::memcpy(&hlen, b.data() + 8, 2);
  const std::string header = b.substr(10, hlen);
  if (header.find("'<f4'") == std::string::npos || header.find("False") == std::string::npos)
    sy::fail("'{}' must hold little-endian float32 in C order", path);
  const size_t open = header.find('('), comma = header.find(',', open);
  rows = std::stoll(header.substr(open + 1, comma - open - 1));
  cols = std::stoll(header.substr(comma + 1));
  std::vector<float> x(static_cast<size_t>(rows * cols));
  if (b.size() != 10 + hlen + x.size() * 4) sy::fail("'{}' has the wrong size", path);
  std::memcpy(x.data(), b.data() + 10 + hlen, x.size() * 4);
  return x;
}

int write(const std::string& in, const std::string& out) {
  int64_t rows = 0, cols = 0;
  const std::vector<float> x = read_npy_matrix(in, rows, cols);
  sy::io::GgufWriter w;
  w.set_string("general.architecture", "llama");
  w.set_uint32("llama.block_count", 2);
  w.set_uint64("test.big", (uint64_t(1) << 40) + 3);
  w.set_float32("llama.rope.freq_base", 10000.5f);
  w.set_bool("test.flag", true);
  w.set_int32("test.negative", -7);
  w.set_strings("tokenizer.ggml.tokens", {"<s>", "a", "\xc3\xa9t\xc3\xa9", ""});
  w.set_float32s("tokenizer.ggml.scores", {0.0f, -1.5f, 2.25f, 3.0f});
  w.set_int32s("tokenizer.ggml.token_type", {3, 1, 1, 1});
  for (GgmlType t :
       {GgmlType::F32, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0, GgmlType::MXFP4}) {
    const size_t row = sy::ggml_row_bytes(t, cols);
    std::vector<uint8_t> bytes(row * size_t(rows));
    for (int64_t r = 0; r < rows; ++r)
      sy::quantize_row(t, x.data() + r * cols, bytes.data() + size_t(r) * row, cols);
    w.add_tensor(fmt::format("t.{}", sy::ggml_type_name(t)), t, {cols, rows}, bytes.data(),
                 bytes.size());
  }
  w.write(out);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string cmd = argc > 1 ? argv[1] : "";
    if (cmd == "dump" && argc == 4) return dump(argv[2], argv[3]);
    if (cmd == "write" && argc == 4) return write(argv[2], argv[3]);
    fmt::print(stderr, "usage: sy_gguf dump IN.gguf DIR | sy_gguf write IN.npy OUT.gguf\n");
    return 2;
  } catch (const std::exception& e) {
    fmt::print(stderr, "error: {}\n", e.what());
    return 1;
  }
}
