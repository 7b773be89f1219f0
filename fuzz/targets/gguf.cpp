// Target: one .gguf file (header, metadata of every value type, tensor infos, alignment):
// every tensor dequantized and the metadata read back typed, then the file loaded as a model
// (config from the metadata, tensors mapped to the family's names) and run over a few tokens;
// its vocabulary built into a tokenizer that encodes and decodes a line.
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "io/gguf.h"
#include "model/gguf_export.h"
#include "model/gguf_vocab.h"
#include "model/model.h"
#include "scratch.h"
#include "target.h"
#include "targets/seeds_common.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/quant_blocks.h"

namespace sy::fuzz {

void run_one(std::string_view bytes) {
  const std::string path = write_scratch("model.gguf", bytes);
  const io::GgufFile file(path);
  volatile float sink = 0;
  for (const io::GgufTensorInfo& t : file.tensors()) {
    if (t.nbytes) sink = sink + static_cast<const uint8_t*>(t.data)[t.nbytes - 1];
    if (can_dequantize(t.type) && t.numel() <= (int64_t(1) << 18)) {
      std::vector<float> v(static_cast<size_t>(t.numel()));
      dequantize_row(t.type, t.data, v.data(), t.numel());
      if (!v.empty()) sink = sink + v.back();
    }
    (void)t.shape();
  }
  for (const auto& [key, v] : file.metadata()) {
    sink = sink + float(key.size() + v.s.size() + v.strings.size() + v.numbers.size());
    try {  // the typed getters refuse mismatches with sy::Error, never crash
      if (v.is_integer()) sink = sink + float(file.get_uint(key));
      if (v.is_float()) sink = sink + float(file.get_float(key));
    } catch (const Error&) {
    }
  }
  try {  // the vocabulary (tokenizer.ggml.* or tokenizer.huggingface.json) as generate reads it
    if (const std::optional<std::string> json = model::gguf_tokenizer_json(file)) {
      const Tokenizer tok = Tokenizer::from_json_string(*json, path);
      const std::vector<int32_t> ids = tok.encode("In the beginning 1234, caf\u00e9 <s>");
      sink = sink + float(tok.decode(ids).size());
    }
  } catch (const Error&) {
  }
  const model::Model m = model::Model::load(path);
  run_briefly(m);
}

void write_seeds(const std::string& dir) {
  const std::vector<float> x = [] {
    std::vector<float> v(2 * 256);
    for (size_t i = 0; i < v.size(); ++i) v[i] = float(int(i % 17) - 8) * 0.37f;
    return v;
  }();
  for (GgmlType t :
       {GgmlType::F32, GgmlType::F16, GgmlType::BF16, GgmlType::Q8_0, GgmlType::Q4_0}) {
    io::GgufWriter w;
    w.set_string("general.architecture", "llama");
    w.set_uint32("llama.block_count", 1);
    w.set_uint32("general.alignment", 32);
    w.set_float32("llama.rope.freq_base", 10000.0f);
    w.set_string("tokenizer.ggml.model", "llama");
    w.set_bool("tokenizer.ggml.add_bos_token", true);
    w.set_strings("tokenizer.ggml.tokens", {"<s>", "a", "b"});
    w.set_float32s("tokenizer.ggml.scores", {0.0f, -1.0f, -2.0f});
    w.set_int32s("tokenizer.ggml.token_type", {3, 1, 1});
    const size_t row = ggml_row_bytes(t, 256);
    std::vector<uint8_t> bytes(2 * row);
    for (int r = 0; r < 2; ++r) quantize_row(t, x.data() + r * 256, bytes.data() + r * row, 256);
    w.add_tensor("blk.0.ffn_gate_exps.weight", t, {256, 2}, bytes.data(), bytes.size());
    w.add_tensor("output_norm.weight", GgmlType::F32, {256}, x.data(), 256 * 4);
    write_seed(dir, std::string(ggml_type_name(t)) + ".gguf", w.serialize());
  }
  // Whole models: the synthetic checkpoints of the families GGUF supports, as quantize writes
  // them.
  for (const auto& seed : seed_checkpoints()) {
    for (const char* t : {"F32", "Q8_0", "Q4_K_M"}) {
      const std::string out = scratch_dir() + "/seed.gguf";
      try {
        model::export_gguf(write_seed_checkpoint(seed), out, model::parse_gguf_export_type(t));
      } catch (const Error&) {
        continue;  // a family or layout GGUF does not carry
      }
      write_seed(dir, seed.name + "." + t + ".gguf", read_file(out));
    }
  }
}

}  // namespace sy::fuzz
