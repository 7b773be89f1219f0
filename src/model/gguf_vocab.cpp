// GGUF tokenizer metadata <-> tokenizer.json (gguf_vocab.h); the conversion itself is
// tokenizer/ggml_vocab.h, this file only moves keys in and out of the file.
#include "model/gguf_vocab.h"

#include "tokenizer/ggml_vocab.h"
#include "util/error.h"

namespace sy::model {

namespace {

int32_t id_or_none(const io::GgufFile& f, const std::string& key) {
  const std::optional<uint64_t> v = f.uint_or_none(key);
  if (!v) return -1;
  if (*v > uint64_t(INT32_MAX)) fail("GGUF key '{}' = {} is not a token id", key, *v);
  return int32_t(*v);
}

bool bool_or(const io::GgufFile& f, const std::string& key, bool fallback) {
  return f.find(key) ? f.get_bool(key) : fallback;
}

}  // namespace

std::optional<std::string> gguf_tokenizer_json(const io::GgufFile& f) {
  if (const io::GgufValue* v = f.find("tokenizer.huggingface.json"))
    if (v->type == io::GgufValueType::kString) return v->s;
  if (!f.find("tokenizer.ggml.tokens")) return std::nullopt;
  GgmlVocab v;
  v.model = f.get_string("tokenizer.ggml.model");
  if (f.find("tokenizer.ggml.pre")) v.pre = f.get_string("tokenizer.ggml.pre");
  v.tokens = f.get_strings("tokenizer.ggml.tokens");
  if (f.find("tokenizer.ggml.scores"))
    for (double s : f.get_numbers("tokenizer.ggml.scores")) v.scores.push_back(float(s));
  if (f.find("tokenizer.ggml.token_type"))
    for (double t : f.get_numbers("tokenizer.ggml.token_type")) v.token_types.push_back(int32_t(t));
  if (f.find("tokenizer.ggml.merges")) v.merges = f.get_strings("tokenizer.ggml.merges");
  v.bos = id_or_none(f, "tokenizer.ggml.bos_token_id");
  v.eos = id_or_none(f, "tokenizer.ggml.eos_token_id");
  v.unk = id_or_none(f, "tokenizer.ggml.unknown_token_id");
  v.pad = id_or_none(f, "tokenizer.ggml.padding_token_id");
  // llama.cpp's defaults: SentencePiece vocabularies add BOS and a leading space.
  const bool spm = v.model == "llama";
  v.add_bos = bool_or(f, "tokenizer.ggml.add_bos_token", spm);
  v.add_eos = bool_or(f, "tokenizer.ggml.add_eos_token", false);
  v.add_space_prefix = bool_or(f, "tokenizer.ggml.add_space_prefix", spm);
  if (v.add_bos && v.bos < 0) v.add_bos = false;
  return tokenizer_json_from_ggml(v);
}

bool write_gguf_vocab(io::GgufWriter& g, const std::string& tokenizer_json, int32_t bos,
                      int32_t eos, int64_t vocab_size, std::string* why) {
  GgmlVocab v;
  try {
    v = ggml_vocab_from_tokenizer_json(tokenizer_json, bos, eos, vocab_size);
  } catch (const Error& e) {
    if (why) *why = e.what();
    return false;
  }
  g.set_string("tokenizer.ggml.model", v.model);
  if (!v.pre.empty()) g.set_string("tokenizer.ggml.pre", v.pre);
  g.set_strings("tokenizer.ggml.tokens", v.tokens);
  if (!v.scores.empty()) g.set_float32s("tokenizer.ggml.scores", v.scores);
  g.set_int32s("tokenizer.ggml.token_type", v.token_types);
  if (!v.merges.empty()) g.set_strings("tokenizer.ggml.merges", v.merges);
  if (v.unk >= 0) g.set_uint32("tokenizer.ggml.unknown_token_id", uint32_t(v.unk));
  g.set_bool("tokenizer.ggml.add_bos_token", v.add_bos);
  g.set_bool("tokenizer.ggml.add_eos_token", v.add_eos);
  if (v.model == "llama") g.set_bool("tokenizer.ggml.add_space_prefix", v.add_space_prefix);
  return true;
}

}  // namespace sy::model
