// Tokenizer unit tests: hand-checked BPE cases (merge ranks, byte fallback, added tokens,
// skipped specials), split behaviours, parse errors, and round trips through the trainer's
// two styles; the comparison with Hugging Face itself is tests/reference/test_tokenizer_hf.sh.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tokenizer/bpe_trainer.h"
#include "tokenizer/components.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/utf8.h"
#include "util/error.h"

namespace sy {
namespace {

using Ids = std::vector<int32_t>;

// A tokenizer.json with a tiny BPE model; `extra` is spliced into the top-level object.
std::string tiny_json(const std::string& merges, const std::string& extra = "") {
  return R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4, "abc": 5, "<unk>": 6},
             "unk_token": "<unk>", "merges": )" +
         merges + "}" + extra + "}";
}

std::string read_sample() {
  std::ifstream in(std::string(SY_SOURCE_DIR) + "/tests/tokenizer/sample_unicode.txt", std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(TokenizerBpe, MergesApplyByRank) {
  auto t1 = Tokenizer::from_json_string(tiny_json(R"(["b c", "a b", "ab c"])"), "t1");
  EXPECT_EQ(t1.encode("abc"), (Ids{0, 4}));  // "b c" has rank 0, and there is no "a bc" merge
  auto t2 = Tokenizer::from_json_string(tiny_json(R"([["a", "b"], ["b", "c"], ["ab", "c"]])"), "t2");
  EXPECT_EQ(t2.encode("abc"), (Ids{5}));
  EXPECT_EQ(t2.encode("abab"), (Ids{3, 3}));
  EXPECT_EQ(t2.encode("abx"), (Ids{3, 6}));  // unknown character -> unk
  EXPECT_EQ(t2.decode({3, 2}), "ab c");       // no decoder: tokens joined by spaces, as HF
}

TEST(TokenizerBpe, ByteFallbackAndFusedUnk) {
  const std::string json = R"({"model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
      "vocab": {"<unk>": 0, "<0xC3>": 1, "<0xA9>": 2, "x": 3}, "merges": []},
      "decoder": {"type": "Sequence", "decoders": [{"type": "ByteFallback"}, {"type": "Fuse"}]}})";
  auto t = Tokenizer::from_json_string(json, "bf");
  EXPECT_EQ(t.encode("xéx"), (Ids{3, 1, 2, 3}));
  EXPECT_EQ(t.encode("ßß"), (Ids{0}));  // no byte tokens for ß: one fused unk
  EXPECT_EQ(t.decode({3, 1, 2, 3}), "xéx");
  EXPECT_EQ(t.decode({1, 3}), "\xEF\xBF\xBDx");  // an incomplete byte run becomes U+FFFD per byte
}

TEST(TokenizerBpe, AddedTokensSplitFirstAndSpecialsSkip) {
  const std::string added = R"(, "added_tokens": [
      {"id": 7, "content": "<s>", "special": true},
      {"id": 8, "content": "<s>ab", "special": true},
      {"id": 9, "content": "[M]", "special": true, "lstrip": true, "rstrip": true},
      {"id": 10, "content": "bc", "special": false, "normalized": false}])";
  auto t = Tokenizer::from_json_string(tiny_json(R"(["a b", "b c"])", added), "added");
  EXPECT_EQ(t.encode("a<s>c"), (Ids{0, 7, 2}));
  EXPECT_EQ(t.encode("<s>abc"), (Ids{8, 2}));   // longest match first
  EXPECT_EQ(t.encode("ab  [M]  c"), (Ids{3, 9, 2}));  // lstrip/rstrip absorb the spaces (else: unk for ' ')
  EXPECT_EQ(t.encode("abc"), (Ids{0, 10}));      // added tokens split before the model sees the text
  EXPECT_TRUE(t.is_special(7));
  EXPECT_FALSE(t.is_special(10));
  EXPECT_EQ(t.decode({7, 3, 10}, true), "ab bc");
  EXPECT_EQ(t.decode({7, 3, 10}, false), "<s> ab bc");
  EXPECT_EQ(t.vocab_size(), 11);
  EXPECT_EQ(t.token_to_id("[M]"), 9);
  EXPECT_EQ(t.id_to_token(5), "abc");
}

TEST(TokenizerBpe, TemplateAddsBosOnlyWithSpecialTokens) {
  const std::string extra = R"(, "added_tokens": [{"id": 7, "content": "<s>", "special": true}],
      "post_processor": {"type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [7], "tokens": ["<s>"]}}})";
  auto t = Tokenizer::from_json_string(tiny_json("[]", extra), "tpl");
  EXPECT_EQ(t.encode("ab"), (Ids{7, 0, 1}));
  EXPECT_EQ(t.encode("ab", false), (Ids{0, 1}));
}

TEST(TokenizerSplit, Behaviours) {
  const Piece p{"a-b--c", true};
  const Regex dash = Regex::literal("-", "test");
  auto texts = [&](SplitBehavior b, bool invert = false) {
    std::vector<std::string> out;
    for (const Piece& q : split_at_matches(p, dash.find_all(p.text), b, invert)) out.push_back(q.text);
    return out;
  };
  using V = std::vector<std::string>;
  EXPECT_EQ(texts(SplitBehavior::Removed), (V{"a", "b", "c"}));
  EXPECT_EQ(texts(SplitBehavior::Isolated), (V{"a", "-", "b", "-", "-", "c"}));
  EXPECT_EQ(texts(SplitBehavior::MergedWithPrevious), (V{"a-", "b-", "-", "c"}));
  EXPECT_EQ(texts(SplitBehavior::MergedWithNext), (V{"a", "-b", "-", "-c"}));
  EXPECT_EQ(texts(SplitBehavior::Contiguous), (V{"a", "-", "b", "--", "c"}));
  EXPECT_EQ(texts(SplitBehavior::Removed, true), (V{"-", "-", "-"}));
}

TEST(TokenizerMetaspace, PrependAndDecode) {
  const std::string json = R"({"model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3}, "merges": [["▁", "a"]]},
      "pre_tokenizer": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true},
      "decoder": {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "always", "split": true}})";
  auto t = Tokenizer::from_json_string(json, "ms");
  EXPECT_EQ(t.encode("a ab"), (Ids{3, 3, 2}));
  EXPECT_EQ(t.decode({3, 3, 2}), "a ab");
}

TEST(TokenizerErrors, BadFilesNameTheProblem) {
  auto message = [](const std::string& json) -> std::string {
    try {
      Tokenizer::from_json_string(json, "my/tokenizer.json");
    } catch (const Error& e) {
      return e.what();
    }
    return "no error";
  };
  EXPECT_NE(message("{not json").find("invalid JSON"), std::string::npos);
  EXPECT_NE(message("{}").find("missing field '<root>.model' in my/tokenizer.json"), std::string::npos);
  EXPECT_NE(message(tiny_json("[]", R"(, "pre_tokenizer": {"type": "Frobnicate"})"))
                .find("unsupported pre_tokenizer type 'Frobnicate'"),
            std::string::npos);
  EXPECT_NE(message(tiny_json("[]", R"(, "normalizer": {"type": "NFKC"})")).find("unsupported normalizer NFKC"),
            std::string::npos);
  EXPECT_NE(message(tiny_json(R"(["a c"])")).find("token 'ac' is not in the vocab"), std::string::npos);
  EXPECT_NE(message(tiny_json(R"(["a"])")).find("merges[0]"), std::string::npos);
  EXPECT_NE(message(R"({"model": {"type": "WordPiece", "vocab": {}}})").find("unsupported model type 'WordPiece'"),
            std::string::npos);
  EXPECT_NE(message(tiny_json("[]", R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"})"))
                .find("invalid regex"),
            std::string::npos);
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), Error);
  auto t = Tokenizer::from_json_string(tiny_json("[]"), "t");
  EXPECT_THROW(t.encode("\xC3"), Error);  // invalid UTF-8 input
}

// Trains each style on the sample (plus repetitions so pairs recur) and round-trips it.
class TrainedStyles : public ::testing::TestWithParam<BpeStyle> {};

TEST_P(TrainedStyles, RoundTripAndStreaming) {
  std::string sample = read_sample();
  ASSERT_FALSE(sample.empty());
  BpeTrainOptions o;
  o.style = GetParam();
  o.vocab_size = 700;
  o.special_tokens = {"<|endoftext|>", "<|im_start|>", "<|im_end|>"};
  const std::string corpus = sample + sample + "The quick brown fox jumps over the lazy dog.\n";
  const std::string json = train_bpe_tokenizer_json(corpus, o);
  EXPECT_EQ(json, train_bpe_tokenizer_json(corpus, o)) << "training must be deterministic";
  auto t = Tokenizer::from_json_string(json, "trained");
  EXPECT_EQ(t.vocab_size(), 700);

  // SentencePiece style re-inserts "▁" after each special token (as HF's Llama tokenizers
  // do), so that style round-trips text without inline specials.
  std::string text = sample;
  if (o.style == BpeStyle::SentencePiece) {
    for (const std::string& s : {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"}) {
      for (size_t pos; (pos = text.find(s)) != std::string::npos;) text.erase(pos, s.size());
    }
  }
  const Ids ids = t.encode(text, false);
  EXPECT_LT(ids.size(), text.size() * 3 / 4) << "merges should compress the sample";
  EXPECT_EQ(t.decode(ids), text);
  for (const std::string line : {"", " ", "  leading spaces", "tab\tand\nnewline\n", "😀👨‍👩‍👧", "a\u0301"}) {
    EXPECT_EQ(t.decode(t.encode(line, false)), line) << line;
  }

  StreamDecoder stream(t);
  std::string streamed;
  for (int32_t id : ids) {
    const std::string piece = stream.push(id);
    EXPECT_EQ(utf8::find_invalid(piece), std::string::npos) << "pushed text must be complete UTF-8";
    streamed += piece;
  }
  streamed += stream.flush();
  EXPECT_EQ(streamed, t.decode(ids));

  const Ids with_bos = t.encode("hello");
  if (o.style == BpeStyle::SentencePiece) {
    EXPECT_EQ(with_bos.front(), 1);
    EXPECT_EQ(t.id_to_token(0), "<unk>");
    EXPECT_EQ(t.decode(with_bos, true), "hello");
  } else {
    EXPECT_EQ(t.decode(with_bos), "hello");
  }
  const auto eot = t.token_to_id("<|endoftext|>");
  ASSERT_TRUE(eot.has_value());
  const Ids special = t.encode("a<|endoftext|>b", false);
  EXPECT_NE(std::find(special.begin(), special.end(), *eot), special.end());
  EXPECT_EQ(t.decode(special, true).find("<|endoftext|>"), std::string::npos);
}

INSTANTIATE_TEST_SUITE_P(Styles, TrainedStyles, ::testing::Values(BpeStyle::ByteLevel, BpeStyle::SentencePiece),
                         [](const auto& info) { return info.param == BpeStyle::ByteLevel ? "ByteLevel" : "SentencePiece"; });

TEST(TokenizerUtf8, LossyAndPartial) {
  EXPECT_EQ(utf8::lossy("a\xF0\x9F\x98"), "a\xEF\xBF\xBD");  // one U+FFFD for the maximal subpart
  EXPECT_TRUE(utf8::ends_with_partial_sequence("a\xF0\x9F"));
  EXPECT_FALSE(utf8::ends_with_partial_sequence("a\xF0\x9F\x98\x80"));
}

}  // namespace
}  // namespace sy
