// GGUF reader and writer (src/io/gguf.h). Files are built byte by byte here from the format's
// definition (magic, version, counts, key-value pairs, tensor infos, aligned data), never with
// the writer under test; every malformed file is one defect away from the control file the
// reader accepts, so each rejection is for the stated reason. The writer is checked against
// Hugging Face's own GGUF parser in tests/reference/test_gguf_vs_hf.sh.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "expect_error.h"
#include "io/gguf.h"
#include "temp_dir.h"
#include "util/quant_blocks.h"

namespace sy::io {
namespace {

template <class T>
std::string le(T v) {
  std::string s(sizeof(T), '\0');
  std::memcpy(s.data(), &v, sizeof(T));
  return s;
}
std::string str(const std::string& s) {
  return le<uint64_t>(s.size()) + s;
}

// The parts of a GGUF image; tests change one field and assemble.
struct Image {
  std::string magic = "GGUF";
  uint32_t version = 3;
  std::vector<std::string> kvs;      // encoded pairs
  std::vector<std::string> tensors;  // encoded tensor infos
  uint64_t kv_count_override = UINT64_MAX, tensor_count_override = UINT64_MAX;
  uint32_t alignment = 32;
  std::string data;  // after the padding
  std::string bytes() const {
    std::string s =
        magic + le(version) +
        le<uint64_t>(tensor_count_override != UINT64_MAX ? tensor_count_override : tensors.size()) +
        le<uint64_t>(kv_count_override != UINT64_MAX ? kv_count_override : kvs.size());
    for (const auto& kv : kvs) s += kv;
    for (const auto& t : tensors) s += t;
    if (!tensors.empty()) s.resize((s.size() + alignment - 1) / alignment * alignment, '\0');
    return s + data;
  }
};

std::string kv_u32(const std::string& k, uint32_t v) {
  return str(k) + le<uint32_t>(4) + le(v);
}
std::string kv_string(const std::string& k, const std::string& v) {
  return str(k) + le<uint32_t>(8) + str(v);
}
std::string tensor_info(const std::string& name, std::vector<int64_t> dims, uint32_t type,
                        uint64_t offset) {
  std::string s = str(name) + le<uint32_t>(uint32_t(dims.size()));
  for (int64_t d : dims) s += le(d);
  return s + le(type) + le(offset);
}

// A valid file: two metadata keys, a string array, an F32 [3, 2] tensor and a Q8_0 [32, 1] one.
Image control() {
  Image im;
  im.kvs.push_back(kv_string("general.architecture", "llama"));
  im.kvs.push_back(kv_u32("llama.block_count", 2));
  im.kvs.push_back(str("tokenizer.ggml.tokens") + le<uint32_t>(9) + le<uint32_t>(8) +
                   le<uint64_t>(2) + str("a") + str("bc"));
  im.tensors.push_back(tensor_info("w", {3, 2}, 0, 0));
  im.tensors.push_back(tensor_info("q", {32, 1}, 8, 32));
  std::string f32(24, '\0');
  for (int i = 0; i < 6; ++i) {
    const float v = float(i) + 0.5f;
    std::memcpy(f32.data() + 4 * i, &v, 4);
  }
  im.data = f32 + std::string(8, '\0') + std::string(34, '\x01');
  return im;
}

class GgufTest : public ::testing::Test {
 protected:
  std::string write(const std::string& bytes) {
    const std::string p = dir_.file("m" + std::to_string(n_++) + ".gguf");
    std::ofstream(p, std::ios::binary).write(bytes.data(), std::streamsize(bytes.size()));
    return p;
  }
  void rejects(const Image& im, std::vector<std::string> parts) {
    const std::string p = write(im.bytes());
    sy::testing::expect_error([&] { GgufFile f(p); }, parts);
  }
  sy::testing::TempDir dir_;
  int n_ = 0;
};

TEST_F(GgufTest, ReadsTheControlFile) {
  GgufFile f(write(control().bytes()));
  EXPECT_EQ(f.version(), 3u);
  EXPECT_EQ(f.get_string("general.architecture"), "llama");
  EXPECT_EQ(f.get_uint("llama.block_count"), 2u);
  EXPECT_EQ(f.get_strings("tokenizer.ggml.tokens"), (std::vector<std::string>{"a", "bc"}));
  ASSERT_EQ(f.tensors().size(), 2u);
  const GgufTensorInfo* w = f.find_tensor("w");
  ASSERT_NE(w, nullptr);
  EXPECT_EQ(w->shape(), (std::vector<int64_t>{2, 3}));  // outermost first
  EXPECT_EQ(w->nbytes, 24u);
  EXPECT_EQ(static_cast<const float*>(w->data)[5], 5.5f);
  const GgufTensorInfo* q = f.find_tensor("q");
  ASSERT_NE(q, nullptr);
  EXPECT_EQ(q->type, GgmlType::Q8_0);
  EXPECT_EQ(q->nbytes, 34u);
  EXPECT_EQ(static_cast<const uint8_t*>(q->data)[0], 1);
  sy::testing::expect_error([&] { f.get_uint("general.architecture"); },
                            {"general.architecture", "string", "unsigned integer"});
  sy::testing::expect_error([&] { f.get_string("nope"); }, {"no metadata key 'nope'"});
}

TEST_F(GgufTest, RejectsABadHeader) {
  Image im = control();
  im.magic = "GGUG";
  rejects(im, {"not a GGUF file"});
  im = control();
  im.version = 1;
  rejects(im, {"version 1"});
  im = control();
  im.version = 7;
  rejects(im, {"version 7"});
  im = control();
  im.kv_count_override = uint64_t(1) << 60;
  rejects(im, {"cannot fit"});
  const std::string cut = control().bytes().substr(0, 150);  // inside the tensor infos
  sy::testing::expect_error([&] { GgufFile f(write(cut)); }, {"past the end of the file"});
  sy::testing::expect_error([&] { GgufFile f(write("GGUF")); }, {"shorter than the 24-byte"});
}

TEST_F(GgufTest, RejectsBadMetadata) {
  Image im = control();
  im.kvs.push_back(kv_u32("llama.block_count", 3));
  rejects(im, {"'llama.block_count' appears twice"});
  im = control();
  im.kvs.push_back(kv_u32("", 3));
  rejects(im, {"key 3 is empty"});
  im = control();
  im.kvs.push_back(str("x") + le<uint32_t>(13) + le<uint32_t>(0));
  rejects(im, {"unknown value type 13"});
  im = control();
  im.kvs.push_back(str("x") + le<uint32_t>(7) + std::string(1, '\x02'));
  rejects(im, {"bool value 2"});
  im = control();  // an array of arrays
  im.kvs.push_back(str("x") + le<uint32_t>(9) + le<uint32_t>(9) + le<uint64_t>(0));
  rejects(im, {"array of arrays"});
  im = control();  // an array longer than the file
  im.kvs.push_back(str("x") + le<uint32_t>(9) + le<uint32_t>(6) + le<uint64_t>(uint64_t(1) << 40));
  rejects(im, {"past the end"});
  im = control();  // a string longer than the file
  im.kvs.push_back(str("x") + le<uint32_t>(8) + le<uint64_t>(uint64_t(1) << 50));
  rejects(im, {"past the end"});
  im = control();
  im.kvs.push_back(str("general.alignment") + le<uint32_t>(4) + le<uint32_t>(24));
  rejects(im, {"alignment 24 is not a power of two"});
  im = control();
  im.kvs.push_back(str("general.alignment") + le<uint32_t>(10) + le<uint64_t>(32));
  rejects(im, {"general.alignment is u64"});
}

TEST_F(GgufTest, RejectsBadTensorInfos) {
  Image im = control();
  im.tensors[1] = tensor_info("w", {32, 1}, 8, 32);
  rejects(im, {"tensor 'w' appears twice"});
  im = control();
  im.tensors[1] = tensor_info("q", {30, 1}, 8, 32);
  rejects(im, {"row of 30 elements", "block of 32"});
  im = control();
  im.tensors[1] = tensor_info("q", {32, 1}, 4, 32);
  rejects(im, {"unknown ggml type 4"});
  im = control();
  im.tensors[1] = tensor_info("q", {32, 1, 1, 1, 1}, 8, 32);
  rejects(im, {"5 dimensions"});
  im = control();
  im.tensors[1] = tensor_info("q", {32, -1}, 8, 32);
  rejects(im, {"negative dimension"});
  im = control();
  im.tensors[1] = tensor_info("q", {32, 1}, 8, 16);
  rejects(im, {"offset 16, not a multiple of the alignment 32"});
  im = control();
  im.tensors[1] = tensor_info("q", {32, 1}, 8, 0);
  rejects(im, {"overlap"});
  im = control();
  im.tensors[1] = tensor_info("q", {32, int64_t(1) << 40}, 8, 32);
  rejects(im, {"more than the whole file"});
  im = control();
  im.data.pop_back();
  rejects(im, {"tensor 'q'", "truncated"});
  im = control();
  im.tensors[1] = tensor_info(std::string(64, 'n'), {32, 1}, 8, 32);
  rejects(im, {"longer than 63 bytes"});
}

TEST_F(GgufTest, WriterOutputReadsBack) {
  GgufWriter w;
  w.set_string("general.architecture", "qwen2moe");
  w.set_uint32("qwen2moe.expert_count", 8);
  w.set_float32("qwen2moe.rope.freq_base", 10000.0f);
  w.set_bool("flag", true);
  w.set_strings("tokenizer.ggml.tokens", {"x", "", "yz"});
  w.set_float32s("tokenizer.ggml.scores", {0.5f, -1.0f, 2.0f});
  w.set_int32s("tokenizer.ggml.token_type", {1, 3, 1});
  const std::vector<float> a{1, 2, 3, 4, 5, 6};
  w.add_tensor("a", GgmlType::F32, {3, 2}, a.data(), 24);
  const std::string q(34, '\x07');
  w.add_tensor("q", GgmlType::Q8_0, {32}, q.data(), q.size());
  const std::string path = dir_.file("w.gguf");
  w.write(path);
  GgufFile f(path);
  EXPECT_EQ(f.get_string("general.architecture"), "qwen2moe");
  EXPECT_EQ(f.get_uint("qwen2moe.expert_count"), 8u);
  EXPECT_EQ(f.get_float("qwen2moe.rope.freq_base"), 10000.0);
  EXPECT_TRUE(f.get_bool("flag"));
  EXPECT_EQ(f.get_strings("tokenizer.ggml.tokens"), (std::vector<std::string>{"x", "", "yz"}));
  EXPECT_EQ(f.get_numbers("tokenizer.ggml.scores"), (std::vector<double>{0.5, -1.0, 2.0}));
  EXPECT_EQ(f.get_numbers("tokenizer.ggml.token_type"), (std::vector<double>{1, 3, 1}));
  ASSERT_NE(f.find_tensor("q"), nullptr);
  EXPECT_EQ(f.find_tensor("q")->offset % 32, 0u);
  EXPECT_EQ(std::memcmp(f.find_tensor("q")->data, q.data(), q.size()), 0);
  EXPECT_EQ(std::memcmp(f.find_tensor("a")->data, a.data(), 24), 0);
  sy::testing::expect_error([&] { w.add_tensor("a", GgmlType::F32, {1}, a.data(), 4); },
                            {"added twice"});
  sy::testing::expect_error([&] { w.add_tensor("b", GgmlType::F32, {2}, a.data(), 4); },
                            {"4 bytes given"});
}

}  // namespace
}  // namespace sy::io

namespace sy {
namespace {

// The quantizers against the reference decoder (bit-exact elsewhere): every format's round
// trip must stay within its resolution on Gaussian rows, with outliers and an all-zero block.
// Relative RMS error bounds: Q8_0 8 bits (~0.4%), Q6_K (~1.5%), Q4_0 / Q4_K 4 bits (~7%).
TEST(Quantizers, RoundTripWithinEachFormatsResolution) {
  std::mt19937 rng(3);
  std::normal_distribution<float> normal;
  std::vector<float> x(4096);
  for (float& v : x) v = normal(rng);
  x[17] = 9.0f;                                       // an outlier
  std::fill(x.begin() + 512, x.begin() + 768, 0.0f);  // a zero super-block
  struct Case {
    GgmlType type;
    double max_rel_rms;
  };
  for (const Case c :
       {Case{GgmlType::Q8_0, 0.006}, Case{GgmlType::Q6_K, 0.02}, Case{GgmlType::Q4_0, 0.09},
        Case{GgmlType::Q4_K, 0.09}, Case{GgmlType::MXFP4, 0.15}}) {
    std::vector<uint8_t> q(ggml_row_bytes(c.type, int64_t(x.size())));
    quantize_row(c.type, x.data(), q.data(), int64_t(x.size()));
    std::vector<float> back(x.size());
    dequantize_row(c.type, q.data(), back.data(), int64_t(back.size()));
    double err = 0, norm = 0;
    for (size_t i = 0; i < x.size(); ++i) {
      err += double(back[i] - x[i]) * double(back[i] - x[i]);
      norm += double(x[i]) * double(x[i]);
    }
    EXPECT_LE(std::sqrt(err / norm), c.max_rel_rms) << ggml_type_name(c.type);
    EXPECT_GT(std::sqrt(err / norm), 0.0) << ggml_type_name(c.type);  // really quantized
    for (size_t i = 512; i < 768; ++i) ASSERT_EQ(back[i], 0.0f) << ggml_type_name(c.type);
    EXPECT_NEAR(back[17], 9.0f, 9.0f * 3 * c.max_rel_rms) << ggml_type_name(c.type);
  }
}

}  // namespace
}  // namespace sy
