// GGUF vocabularies (tokenizer.ggml.*) against the tokenizer.json they were made from: a
// tokenizer trained here in each style, converted to llama.cpp's keys as `quantize` writes
// them and read back as a GGUF reader does, must give the same ids and text on held-out
// KJV text and on hand-picked edge cases. The tokenizer.json side is checked against Hugging
// Face's implementation by tokenizer_test / the reference tests, so it is the reference here.
// (Agreement with llama.cpp's own tokenizer: bench/peer/check_llama_cpp.sh.)
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "expect_error.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/ggml_vocab.h"
#include "tokenizer/tokenizer.h"
#include "train/kjv_text.h"

namespace sy {
namespace {

using testing::expect_error;
using train::load_kjv_chapters;

struct Style {
  const char* name;
  BpeStyle style;
  SplitPreset preset;
  const char* pre;  // what the GGUF should call its pre-tokenizer
};

const Style kStyles[] = {
    {"qwen2", BpeStyle::ByteLevel, SplitPreset::Qwen2, "qwen2"},
    {"llama3", BpeStyle::ByteLevel, SplitPreset::Llama3, "smaug-bpe"},
    {"gpt2", BpeStyle::ByteLevel, SplitPreset::Gpt2, "gpt-2"},
    {"sentencepiece", BpeStyle::SentencePiece, SplitPreset::Qwen2, ""},
};

const std::vector<std::string>& chapters() {
  static const std::vector<std::string> c = load_kjv_chapters();
  return c;
}

std::string join(size_t begin, size_t end) {
  std::string s;
  for (size_t i = begin; i < end; ++i) s += chapters()[i];
  return s;
}

class GgmlVocabRoundTrip : public ::testing::TestWithParam<Style> {};

TEST_P(GgmlVocabRoundTrip, SameIdsAndTextAsTheTokenizerJson) {
  const Style& st = GetParam();
  BpeTrainOptions o;
  o.vocab_size = 1500;
  o.style = st.style;
  o.preset = st.preset;
  if (st.style == BpeStyle::ByteLevel) o.special_tokens = {"<|endoftext|>", "<|im_start|>"};
  const std::string json = train_bpe_tokenizer_json(join(0, 40), o);
  const Tokenizer ref = Tokenizer::from_json_string(json, st.name);
  const int32_t bos = st.style == BpeStyle::SentencePiece ? 1 : -1;
  const int32_t eos =
      st.style == BpeStyle::SentencePiece ? 2 : int32_t(*ref.token_to_id("<|endoftext|>"));

  const GgmlVocab v = ggml_vocab_from_tokenizer_json(json, bos, eos);
  EXPECT_EQ(v.model, st.style == BpeStyle::SentencePiece ? "llama" : "gpt2");
  EXPECT_EQ(v.pre, st.pre);
  ASSERT_EQ(int64_t(v.tokens.size()), ref.vocab_size());
  const Tokenizer back = Tokenizer::from_json_string(tokenizer_json_from_ggml(v), "from ggml");
  ASSERT_EQ(back.vocab_size(), ref.vocab_size());

  std::vector<std::string> texts = {
      "",
      " ",
      "  leading and trailing spaces  ",
      "In the beginning God created the heaven and the earth.",
      "numbers 1234567 and 3.14159, tabs\tand\nnewlines\n\n",
      "UTF-8: caf\u00e9 \u00fcber \u4e2d\u6587 \U0001F600 and 'quotes' it's they'll",
      "special <|endoftext|> inside<|im_start|>text",
  };
  const std::string held_out = join(1000, 1010);  // chapters the tokenizer never saw
  for (size_t at = 0; at < held_out.size(); at += 3000) texts.push_back(held_out.substr(at, 3000));
  size_t tokens = 0;
  for (const std::string& t : texts) {
    if (st.style == BpeStyle::SentencePiece && t.find("<|") != std::string::npos) continue;
    const std::vector<int32_t> want = ref.encode(t), got = back.encode(t);
    ASSERT_EQ(got, want) << st.name << " on \"" << t.substr(0, 80) << "\"";
    EXPECT_EQ(back.decode(got), ref.decode(want)) << st.name;
    tokens += want.size();
  }
  EXPECT_GT(tokens, 5000u);
}

INSTANTIATE_TEST_SUITE_P(Styles, GgmlVocabRoundTrip, ::testing::ValuesIn(kStyles),
                         [](const auto& info) { return std::string(info.param.name); });

TEST(GgmlVocab, MalformedVocabulariesAreClearErrors) {
  GgmlVocab v;
  v.model = "gpt2";
  v.pre = "qwen2";
  v.tokens = {"a", "b", "ab"};
  v.merges = {"a b"};
  EXPECT_NO_THROW(tokenizer_json_from_ggml(v));
  GgmlVocab bad = v;
  bad.model = "rwkv";
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"tokenizer.ggml.model 'rwkv'"});
  bad = v;
  bad.pre = "chatglm-bpe";
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"tokenizer.ggml.pre 'chatglm-bpe'"});
  bad = v;
  bad.merges = {"a c"};
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"merges[0]"});
  bad = v;
  bad.merges = {"ab"};
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"two tokens"});
  bad = v;
  bad.token_types = {1, 1};
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"token_type has 2 entries for 3"});
  bad = v;
  bad.token_types = {1, 9, 1};
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"not a llama.cpp token type"});
  bad = v;
  bad.bos = 3;
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"past the 3 tokens"});
  bad = v;
  bad.tokens[1] = "\xff";
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"not valid UTF-8"});
  bad = v;
  bad.model = "llama";
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"scores has 0 entries"});
  bad = v;
  bad.tokens.clear();
  expect_error([&] { tokenizer_json_from_ggml(bad); }, {"empty"});
  expect_error([&] { ggml_vocab_from_tokenizer_json("{\"model\": 3}", -1, -1); }, {"model"});
  expect_error([&] { ggml_vocab_from_tokenizer_json("not json", -1, -1); }, {"model"});
}

}  // namespace
}  // namespace sy
