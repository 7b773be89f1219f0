// GGUF tokenizer.ggml.* <-> tokenizer.json (ggml_vocab.h). The pipelines written here are the
// ones Hugging Face's converters give these vocabularies: byte-level BPE with the pre type's
// split regex, or SentencePiece-style BPE (Prepend / Replace "▁", byte fallback).
#include "tokenizer/ggml_vocab.h"

#include <fmt/format.h>

#include <algorithm>
#include <map>
#include <tuple>
#include <unordered_map>

#include "tokenizer/bpe_trainer_config.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace sy {

namespace {

constexpr const char* kSpace = "\u2581";  // SentencePiece's word-start mark

struct PreType {
  const char* name;
  const char* regex;  // nullptr: ByteLevel's own GPT-2 regex
  bool ignore_merges;
};

// llama.cpp's pre-tokenizer types (llama-vocab.cpp) whose split is one of these regexes.
const PreType kPreTypes[] = {
    {"qwen2", kQwen2Regex, false},      {"deepseek-r1-qwen", kQwen2Regex, false},
    {"llama-bpe", kLlama3Regex, true},  {"llama3", kLlama3Regex, true},
    {"smaug-bpe", kLlama3Regex, false}, {"gpt-2", nullptr, false},
    {"gpt2", nullptr, false},           {"olmo", nullptr, false},
};

const PreType* find_pre(const std::string& name) {
  for (const PreType& p : kPreTypes)
    if (name == p.name) return &p;
  return nullptr;
}

ojson byte_level_step(bool use_regex) {
  return {{"type", "ByteLevel"},
          {"add_prefix_space", false},
          {"trim_offsets", false},
          {"use_regex", use_regex}};
}

ojson bos_template(const std::string& bos, int32_t bos_id, const std::string& eos, int32_t eos_id,
                   bool add_bos, bool add_eos) {
  ojson single = ojson::array(), specials = ojson::object();
  auto special = [&](const std::string& t, int32_t id) {
    single.push_back({{"SpecialToken", {{"id", t}, {"type_id", 0}}}});
    specials[t] = {{"id", t}, {"ids", {id}}, {"tokens", {t}}};
  };
  if (add_bos) special(bos, bos_id);
  single.push_back({{"Sequence", {{"id", "A"}, {"type_id", 0}}}});
  if (add_eos) special(eos, eos_id);
  return {{"type", "TemplateProcessing"},
          {"single", single},
          {"pair", single},
          {"special_tokens", specials}};
}

GgmlTokenType type_of(const GgmlVocab& v, size_t id) {
  return v.token_types.empty() ? GgmlTokenType::kNormal : GgmlTokenType(v.token_types[id]);
}

// SentencePiece BPE merges: every split of a piece into two pieces of the vocabulary, ranked by
// the merged piece's score (highest first), then by the left piece's id, as HF's
// SentencePieceExtractor orders them.
ojson merges_from_scores(const GgmlVocab& v, const std::unordered_map<std::string, int32_t>& ids) {
  std::vector<std::tuple<float, int32_t, int32_t, int32_t>> found;  // -score, merged, left, right
  for (size_t id = 0; id < v.tokens.size(); ++id) {
    const GgmlTokenType t = type_of(v, id);
    if (t != GgmlTokenType::kNormal && t != GgmlTokenType::kUserDefined) continue;
    const std::string& piece = v.tokens[id];
    for (size_t cut = 1; cut < piece.size(); ++cut) {
      if ((uint8_t(piece[cut]) & 0xC0) == 0x80) continue;  // inside a UTF-8 character
      auto l = ids.find(piece.substr(0, cut)), r = ids.find(piece.substr(cut));
      if (l != ids.end() && r != ids.end())
        found.emplace_back(-v.scores[id], int32_t(id), l->second, r->second);
    }
  }
  std::sort(found.begin(), found.end());
  ojson merges = ojson::array();
  for (const auto& [score, merged, l, r] : found)
    merges.push_back({v.tokens[size_t(l)], v.tokens[size_t(r)]});
  return merges;
}

}  // namespace

std::vector<std::string> supported_ggml_pre_types() {
  std::vector<std::string> names;
  for (const PreType& p : kPreTypes) names.emplace_back(p.name);
  return names;
}

std::string tokenizer_json_from_ggml(const GgmlVocab& v) {
  const size_t n = v.tokens.size();
  if (n == 0) fail("tokenizer.ggml.tokens is empty");
  if (!v.token_types.empty() && v.token_types.size() != n)
    fail("tokenizer.ggml.token_type has {} entries for {} tokens", v.token_types.size(), n);
  for (int32_t t : v.token_types)
    if (t < 1 || t > 6) fail("tokenizer.ggml.token_type holds {}, not a llama.cpp token type", t);
  for (int32_t id : {v.bos, v.eos, v.unk, v.pad})
    if (id >= int64_t(n)) fail("a special token id ({}) is past the {} tokens", id, n);
  const bool spm = v.model == "llama";
  if (!spm && v.model != "gpt2")
    fail(
        "tokenizer.ggml.model '{}' is not supported (supported: gpt2 byte-level BPE, llama "
        "SentencePiece BPE); pass token ids with --ids instead of text",
        v.model);
  if (spm && v.scores.size() != n)
    fail("tokenizer.ggml.scores has {} entries for {} tokens", v.scores.size(), n);
  const PreType* pre = spm ? nullptr : find_pre(v.pre.empty() ? "gpt-2" : v.pre);
  if (!spm && !pre)
    fail(
        "tokenizer.ggml.pre '{}' is not supported (supported: {}); pass token ids with --ids "
        "instead of text",
        v.pre, fmt::join(supported_ggml_pre_types(), ", "));

  std::unordered_map<std::string, int32_t> ids;
  ojson vocab = ojson::object(), added = ojson::array();
  for (size_t id = 0; id < n; ++id) {
    const std::string& t = v.tokens[id];
    if (utf8::find_invalid(t) != std::string_view::npos)
      fail("tokenizer.ggml.tokens[{}] is not valid UTF-8", id);
    if (!ids.emplace(t, int32_t(id)).second) continue;  // a duplicate: the first id keeps it
    vocab[t] = id;
    const GgmlTokenType type = type_of(v, id);
    if (type == GgmlTokenType::kControl || type == GgmlTokenType::kUserDefined ||
        (spm && type == GgmlTokenType::kUnknown))
      added.push_back({{"id", id},
                       {"content", t},
                       {"single_word", false},
                       {"lstrip", false},
                       {"rstrip", false},
                       {"normalized", type == GgmlTokenType::kUserDefined && spm},
                       {"special", type != GgmlTokenType::kUserDefined}});
  }
  ojson merges = ojson::array();
  if (spm) {
    merges = merges_from_scores(v, ids);
  } else {
    for (size_t i = 0; i < v.merges.size(); ++i) {
      const std::string& m = v.merges[i];
      const size_t space = m.find(' ');
      if (space == std::string::npos || m.find(' ', space + 1) != std::string::npos)
        fail("tokenizer.ggml.merges[{}] = \"{}\" is not two tokens separated by one space", i, m);
      const std::string l = m.substr(0, space), r = m.substr(space + 1);
      if (!ids.count(l) || !ids.count(r) || !ids.count(l + r))
        fail("tokenizer.ggml.merges[{}] = \"{}\" names a token that is not in the vocabulary", i,
             m);
      merges.push_back({l, r});
    }
  }
  const auto token = [&](int32_t id) { return id >= 0 ? v.tokens[size_t(id)] : std::string(); };
  if ((v.add_bos && v.bos < 0) || (v.add_eos && v.eos < 0))
    fail("tokenizer.ggml.add_bos_token / add_eos_token is set but the token id is missing");
  const ojson post = v.add_bos || v.add_eos ? bos_template(token(v.bos), v.bos, token(v.eos), v.eos,
                                                           v.add_bos, v.add_eos)
                                            : ojson(nullptr);
  ojson normalizer = nullptr, pre_tokenizer = nullptr, decoder;
  if (spm) {
    ojson steps = ojson::array();
    if (v.add_space_prefix) steps.push_back({{"type", "Prepend"}, {"prepend", kSpace}});
    steps.push_back({{"type", "Replace"}, {"pattern", {{"String", " "}}}, {"content", kSpace}});
    normalizer = {{"type", "Sequence"}, {"normalizers", steps}};
    ojson dec = ojson::array();
    dec.push_back({{"type", "Replace"}, {"pattern", {{"String", kSpace}}}, {"content", " "}});
    dec.push_back({{"type", "ByteFallback"}});
    dec.push_back({{"type", "Fuse"}});
    if (v.add_space_prefix)
      dec.push_back({{"type", "Strip"}, {"content", " "}, {"start", 1}, {"stop", 0}});
    decoder = {{"type", "Sequence"}, {"decoders", dec}};
  } else {
    pre_tokenizer = pre->regex ? ojson{{"type", "Sequence"},
                                       {"pretokenizers",
                                        {{{"type", "Split"},
                                          {"pattern", {{"Regex", pre->regex}}},
                                          {"behavior", "Isolated"},
                                          {"invert", false}},
                                         byte_level_step(false)}}}
                               : byte_level_step(true);
    decoder = byte_level_step(true);
  }
  const ojson out = {{"version", "1.0"},
                     {"truncation", nullptr},
                     {"padding", nullptr},
                     {"added_tokens", added},
                     {"normalizer", normalizer},
                     {"pre_tokenizer", pre_tokenizer},
                     {"post_processor", post},
                     {"decoder", decoder},
                     {"model",
                      {{"type", "BPE"},
                       {"dropout", nullptr},
                       {"unk_token", spm && v.unk >= 0 ? ojson(token(v.unk)) : ojson(nullptr)},
                       {"continuing_subword_prefix", nullptr},
                       {"end_of_word_suffix", nullptr},
                       {"fuse_unk", spm},
                       {"byte_fallback", spm},
                       {"ignore_merges", pre && pre->ignore_merges},
                       {"vocab", vocab},
                       {"merges", merges}}}};
  return out.dump();
}

namespace {

GgmlVocab vocab_of(const std::string& json_text, int32_t bos, int32_t eos, int64_t vocab_size) {
  const ojson root = ojson::parse(json_text, nullptr, /*allow_exceptions=*/false);
  if (!root.is_object() || !root.contains("model") || !root["model"].is_object())
    fail("tokenizer.json has no model object");
  const ojson& model = root["model"];
  if (model.value("type", "BPE") != "BPE")
    fail("tokenizer.json model type '{}' has no GGUF vocabulary here (BPE only)",
         model.value("type", ""));
  GgmlVocab v;
  const bool spm = model.value("byte_fallback", false);
  v.model = spm ? "llama" : "gpt2";
  if (!spm) {  // the split regex decides the pre type
    const ojson& pre = root.contains("pre_tokenizer") ? root["pre_tokenizer"] : ojson();
    std::string regex;
    bool byte_level_regex = false;
    const auto visit = [&](const ojson& p) {
      if (!p.is_object()) return;
      if (p.value("type", "") == "Split" && p.contains("pattern") && p["pattern"].contains("Regex"))
        regex = p["pattern"]["Regex"].get<std::string>();
      if (p.value("type", "") == "ByteLevel" && p.value("use_regex", true)) byte_level_regex = true;
    };
    visit(pre);
    if (pre.is_object() && pre.contains("pretokenizers"))
      for (const ojson& p : pre["pretokenizers"]) visit(p);
    const bool ignore = model.value("ignore_merges", false);
    for (const PreType& p : kPreTypes) {
      const bool match =
          p.regex ? regex == p.regex && !byte_level_regex : regex.empty() && byte_level_regex;
      if (match && (p.regex == nullptr || p.ignore_merges == ignore)) {
        v.pre = p.name;
        break;
      }
    }
    if (v.pre.empty())
      fail(
          "the tokenizer's pre-tokenizer has no llama.cpp pre type (known: the Qwen2, Llama 3 and "
          "GPT-2 splits)");
  }
  // Ids: the model's vocab, then added tokens; holes become [PAD<id>] as llama.cpp's converter.
  std::map<int64_t, std::pair<std::string, GgmlTokenType>> by_id;
  for (const auto& [tok, id] : model["vocab"].items())
    by_id[id.get<int64_t>()] = {tok, GgmlTokenType::kNormal};
  if (root.contains("added_tokens"))
    for (const ojson& a : root["added_tokens"])
      by_id[a.at("id").get<int64_t>()] = {
          a.at("content").get<std::string>(),
          a.value("special", false) ? GgmlTokenType::kControl : GgmlTokenType::kUserDefined};
  const int64_t used = by_id.empty() ? 0 : by_id.rbegin()->first + 1;
  if (vocab_size > 0 && used > vocab_size)
    fail("the tokenizer has ids up to {} but the model's vocabulary is {}", used - 1, vocab_size);
  const int64_t n = std::max(used, vocab_size);
  for (int64_t id = 0; id < n; ++id) {
    auto it = by_id.find(id);
    if (it == by_id.end()) {
      v.tokens.push_back(fmt::format("[PAD{}]", id));
      v.token_types.push_back(int32_t(GgmlTokenType::kUnused));
      continue;
    }
    GgmlTokenType type = it->second.second;
    const std::string& t = it->second.first;
    if (spm && t.size() == 6 && t.starts_with("<0x") && t.back() == '>')
      type = GgmlTokenType::kByte;
    if (spm && model.contains("unk_token") && model["unk_token"].is_string() &&
        model["unk_token"].get<std::string>() == t) {
      type = GgmlTokenType::kUnknown;
      v.unk = int32_t(id);
    }
    v.tokens.push_back(t);
    v.token_types.push_back(int32_t(type));
  }
  if (spm) {
    // Scores that rank merged pieces as the merges do: the piece a merge of rank r makes scores
    // -r; pieces no merge makes (characters, bytes, specials) score below every merge.
    std::unordered_map<std::string, int32_t> index;
    for (int64_t id = 0; id < n; ++id) index.emplace(v.tokens[size_t(id)], int32_t(id));
    v.scores.assign(size_t(n), -1e9f);
    const ojson& merges = model["merges"];
    for (size_t r = 0; r < merges.size(); ++r) {
      const std::string merged =
          merges[r].is_array() ? merges[r][0].get<std::string>() + merges[r][1].get<std::string>()
                               : [&] {
                                   std::string m = merges[r].get<std::string>();
                                   m.erase(m.find(' '), 1);
                                   return m;
                                 }();
      auto it = index.find(merged);
      if (it != index.end() && v.scores[size_t(it->second)] == -1e9f)
        v.scores[size_t(it->second)] = -float(r);
    }
    const ojson& norm = root.contains("normalizer") ? root["normalizer"] : ojson();
    v.add_space_prefix = norm.dump().find("Prepend") != std::string::npos;
  } else {
    for (const ojson& m : model["merges"])
      v.merges.push_back(m.is_array() ? m[0].get<std::string>() + " " + m[1].get<std::string>()
                                      : m.get<std::string>());
  }
  v.bos = bos;
  v.eos = eos;
  // add_bos: the post-processor puts the BOS token in front of a single sequence.
  const ojson& post = root.contains("post_processor") ? root["post_processor"] : ojson();
  v.add_bos = bos >= 0 && post.is_object() && post.value("type", "") == "TemplateProcessing" &&
              post.contains("single") && !post["single"].empty() &&
              post["single"][0].contains("SpecialToken");
  return v;
}

}  // namespace

GgmlVocab ggml_vocab_from_tokenizer_json(const std::string& json_text, int32_t bos, int32_t eos,
                                         int64_t vocab_size) {
  try {
    return vocab_of(json_text, bos, eos, vocab_size);
  } catch (const nlohmann::json::exception& e) {
    fail("tokenizer.json: a field has an unexpected type ({})", e.what());
  }
}

}  // namespace sy
