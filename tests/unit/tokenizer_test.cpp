// Tokenizer unit tests: hand-checked BPE cases (merge ranks, byte fallback, added tokens,
// skipped specials), split behaviours, parse errors, and round trips through the trainer's
// two styles; the comparison with Hugging Face itself is tests/reference/test_tokenizer_hf.sh.
#include <gtest/gtest.h>

#include <fstream>
#include <sstream>

#include "tokenizer/bpe_trainer.h"
#include "tokenizer/components.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/unicode_normalize.h"
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
  std::ifstream in(std::string(SY_SOURCE_DIR) + "/tests/tokenizer/sample_unicode.txt",
                   std::ios::binary);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

TEST(TokenizerBpe, MergesApplyByRank) {
  auto t1 = Tokenizer::from_json_string(tiny_json(R"(["b c", "a b", "ab c"])"), "t1");
  EXPECT_EQ(t1.encode("abc"), (Ids{0, 4}));  // "b c" has rank 0, and there is no "a bc" merge
  auto t2 =
      Tokenizer::from_json_string(tiny_json(R"([["a", "b"], ["b", "c"], ["ab", "c"]])"), "t2");
  EXPECT_EQ(t2.encode("abc"), (Ids{5}));
  EXPECT_EQ(t2.encode("abab"), (Ids{3, 3}));
  EXPECT_EQ(t2.encode("abx"), (Ids{3, 6}));  // unknown character -> unk
  EXPECT_EQ(t2.decode({3, 2}), "ab c");      // no decoder: tokens joined by spaces, as HF
}

TEST(TokenizerBpe, ByteFallbackAndFusedUnk) {
  const std::string json =
      R"({"model": {"type": "BPE", "byte_fallback": true, "fuse_unk": true, "unk_token": "<unk>",
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
  EXPECT_EQ(t.encode("<s>abc"), (Ids{8, 2}));  // longest match first
  EXPECT_EQ(t.encode("ab  [M]  c"),
            (Ids{3, 9, 2}));                 // lstrip/rstrip absorb the spaces (else: unk for ' ')
  EXPECT_EQ(t.encode("abc"), (Ids{0, 10}));  // added tokens split before the model sees the text
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
    for (const Piece& q : split_at_matches(p, dash.find_all(p.text), b, invert))
      out.push_back(q.text);
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

TEST(TokenizerMetaspace, EmptyDecoderReplacementIsRefused) {
  // Decoding with an empty replacement would never advance (a hang on a hostile file).
  const std::string json = R"({"model": {"type": "BPE", "vocab": {"a": 0}, "merges": []},
      "decoder": {"type": "Metaspace", "replacement": "", "prepend_scheme": "always"}})";
  try {
    (void)Tokenizer::from_json_string(json, "empty-metaspace");
    ADD_FAILURE() << "an empty Metaspace replacement was accepted";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("replacement' must not be empty"), std::string::npos)
        << e.what();
  }
}

TEST(TokenizerMetaspace, PrependAndDecode) {
  const std::string json =
      R"({"model": {"type": "BPE", "vocab": {"▁": 0, "a": 1, "b": 2, "▁a": 3}, "merges": [["▁", "a"]]},
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
  EXPECT_NE(message("{not json").find("my/tokenizer.json': not valid JSON"), std::string::npos);
  // Hostile files (issue 22): nesting refused while parsing; an id far beyond the vocabulary
  // is refused instead of sizing a table by it.
  EXPECT_NE(message(std::string(5000, '[') + std::string(5000, ']')).find("nests deeper than 64"),
            std::string::npos);
  EXPECT_NE(
      message(R"({"model": {"type": "BPE", "vocab": {"a": 0, "b": 2000000000}, "merges": []}})")
          .find("far beyond the vocabulary's 2 entries"),
      std::string::npos);
  EXPECT_NE(message("{}").find("missing field '<root>.model' in my/tokenizer.json"),
            std::string::npos);
  EXPECT_NE(message(tiny_json("[]", R"(, "pre_tokenizer": {"type": "Frobnicate"})"))
                .find("unsupported pre_tokenizer type 'Frobnicate'"),
            std::string::npos);
  EXPECT_NE(message(tiny_json("[]", R"(, "normalizer": {"type": "Frobnicate"})"))
                .find("unsupported normalizer type 'Frobnicate' at 'normalizer'"),
            std::string::npos);
  EXPECT_NE(message(tiny_json(R"(["a c"])")).find("token 'ac' is not in the vocab"),
            std::string::npos);
  EXPECT_NE(message(tiny_json(R"(["a"])")).find("merges[0]"), std::string::npos);
  EXPECT_NE(message(R"({"model": {"type": "WordPiece", "vocab": {}}})")
                .find("unsupported model type 'WordPiece'"),
            std::string::npos);
  EXPECT_NE(
      message(
          tiny_json(
              "[]",
              R"(, "pre_tokenizer": {"type": "Split", "pattern": {"Regex": "(a"}, "behavior": "Isolated"})"))
          .find("invalid regex"),
      std::string::npos);
  EXPECT_THROW(Tokenizer::from_file("/nonexistent/tokenizer.json"), Error);
  auto t = Tokenizer::from_json_string(tiny_json("[]"), "t");
  EXPECT_THROW(t.encode("\xC3"), Error);  // invalid UTF-8 input
}

// Expected strings come from the Unicode Character Database (UnicodeData.txt decompositions,
// SpecialCasing.txt) and UAX #15's examples, written out as UTF-8 bytes.
TEST(TokenizerUnicode, NormalizationForms) {
  auto nfc = [](std::string_view s) { return unicode_normalize(s, NormalForm::NFC); };
  auto nfd = [](std::string_view s) { return unicode_normalize(s, NormalForm::NFD); };
  auto nfkc = [](std::string_view s) { return unicode_normalize(s, NormalForm::NFKC); };
  auto nfkd = [](std::string_view s) { return unicode_normalize(s, NormalForm::NFKD); };
  // e + COMBINING ACUTE (U+0301) <-> U+00E9
  EXPECT_EQ(nfc("Caf"
                "e\xCC\x81"),
            "Caf\xC3\xA9");
  EXPECT_EQ(nfd("Caf\xC3\xA9"),
            "Caf"
            "e\xCC\x81");
  EXPECT_EQ(nfc("Caf\xC3\xA9"), "Caf\xC3\xA9");
  // Hangul syllable U+D55C <-> jamo U+1112 U+1161 U+11AB (algorithmic decomposition)
  EXPECT_EQ(nfd("\xED\x95\x9C"), "\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB");
  EXPECT_EQ(nfc("\xE1\x84\x92\xE1\x85\xA1\xE1\x86\xAB"), "\xED\x95\x9C");
  // ANGSTROM SIGN U+212B is a canonical singleton: NFC gives U+00C5, NFD A + U+030A
  EXPECT_EQ(nfc("\xE2\x84\xAB"), "\xC3\x85");
  EXPECT_EQ(nfd("\xE2\x84\xAB"), "A\xCC\x8A");
  // LATIN SMALL LIGATURE FI U+FB01 and FULLWIDTH A U+FF21: compatibility only
  EXPECT_EQ(nfc("\xEF\xAC\x81\xEF\xBC\xA1"), "\xEF\xAC\x81\xEF\xBC\xA1");
  EXPECT_EQ(nfkc("\xEF\xAC\x81le \xEF\xBC\xA1"), "file A");
  // VULGAR FRACTION ONE HALF U+00BD -> 1 FRACTION SLASH (U+2044) 2
  EXPECT_EQ(nfkd("\xC2\xBD"),
            "1\xE2\x81\x84"
            "2");
  // Canonical ordering: U+0323 (ccc 220) sorts before U+0307 (ccc 230)
  EXPECT_EQ(nfc("q\xCC\x87\xCC\xA3"), "q\xCC\xA3\xCC\x87");
  // UAX #15 example: U+1E9B U+0323 in the four forms
  const std::string long_s_dot = "\xE1\xBA\x9B\xCC\xA3";
  EXPECT_EQ(nfc(long_s_dot), "\xE1\xBA\x9B\xCC\xA3");
  EXPECT_EQ(nfd(long_s_dot), "\xC5\xBF\xCC\xA3\xCC\x87");
  EXPECT_EQ(nfkc(long_s_dot), "\xE1\xB9\xA9");
  EXPECT_EQ(nfkd(long_s_dot), "s\xCC\xA3\xCC\x87");
  EXPECT_EQ(nfkc(""), "");
  EXPECT_EQ(nfd("plain ASCII\n"), "plain ASCII\n");
}

TEST(TokenizerUnicode, FullLowercasePerCharacter) {
  EXPECT_EQ(unicode_lowercase("ABC xyz 123"), "abc xyz 123");
  EXPECT_EQ(unicode_lowercase("\xC3\x80\xC3\x98"),
            "\xC3\xA0\xC3\xB8");  // U+00C0 U+00D8 -> U+00E0 U+00F8
  // U+0130 LATIN CAPITAL I WITH DOT ABOVE: full mapping is i + U+0307 (SpecialCasing.txt)
  EXPECT_EQ(unicode_lowercase("\xC4\xB0stanbul"), "i\xCC\x87stanbul");
  // HF lowercases char by char (Rust char::to_lowercase): final capital sigma U+03A3 gives
  // U+03C3, not the word-final U+03C2 of a contextual (str::to_lowercase) mapping.
  EXPECT_EQ(unicode_lowercase("\xCE\x9F\xCE\x94\xCE\x9F\xCE\xA3"),
            "\xCE\xBF\xCE\xB4\xCE\xBF\xCF\x83");
  // KELVIN SIGN U+212A -> k, OHM SIGN U+2126 -> U+03C9, CAPITAL SHARP S U+1E9E -> U+00DF
  EXPECT_EQ(unicode_lowercase("\xE2\x84\xAA\xE2\x84\xA6\xE1\xBA\x9E"), "k\xCF\x89\xC3\x9F");
  // DZ digraphs: U+01C4 and titlecase U+01C5 -> U+01C6; Deseret U+10400 -> U+10428 (4-byte)
  EXPECT_EQ(unicode_lowercase("\xC7\x84\xC7\x85"), "\xC7\x86\xC7\x86");
  EXPECT_EQ(unicode_lowercase("\xF0\x90\x90\x80"), "\xF0\x90\x90\xA8");
  EXPECT_EQ(unicode_lowercase("\xE4\xB8\xAD\xF0\x9F\x98\x80"),
            "\xE4\xB8\xAD\xF0\x9F\x98\x80");  // uncased
}

TEST(TokenizerUnicode, NormalizersInThePipeline) {
  // Vocab: U+00E9 "é", "fi", "A" (Ohm/Kelvin etc. left out); unk for anything else.
  const std::string vocab =
      R"("vocab": {"<unk>": 0, "\u00e9": 1, "f": 2, "i": 3, "fi": 4, "a": 5, "e": 6,
      "\u0301": 7, "\u00c5": 8, "A": 9}, "unk_token": "<unk>", "merges": [["f", "i"]])";
  auto with = [&](const std::string& normalizer) {
    return Tokenizer::from_json_string(
        R"({"model": {"type": "BPE", )" + vocab + R"(}, "normalizer": )" + normalizer + "}",
        "norm");
  };
  const std::string decomposed_e = "e\xCC\x81", ligature_fi = "\xEF\xAC\x81",
                    angstrom = "\xE2\x84\xAB";
  EXPECT_EQ(with("null").encode(decomposed_e), (Ids{6, 7}));
  EXPECT_EQ(with(R"({"type": "NFC"})").encode(decomposed_e), (Ids{1}));
  EXPECT_EQ(with(R"({"type": "NFD"})").encode("\xC3\xA9"), (Ids{6, 7}));
  EXPECT_EQ(with(R"({"type": "NFC"})").encode(angstrom), (Ids{8}));
  EXPECT_EQ(with(R"({"type": "NFC"})").encode(ligature_fi), (Ids{0}));
  EXPECT_EQ(with(R"({"type": "NFKC"})").encode(ligature_fi), (Ids{4}));
  EXPECT_EQ(with(R"({"type": "NFKD"})").encode(ligature_fi + "\xEF\xBC\xA1"),
            (Ids{4, 9}));  // U+FF21
  EXPECT_EQ(
      with(R"({"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]})")
          .encode("\xEF\xBC\xA1" + angstrom),
      (Ids{5, 0}));  // U+00E5 is not in the vocab
  // Added tokens with normalized=true match the normalized text (their content normalized too).
  const std::string added =
      R"({"model": {"type": "BPE", )" + vocab + R"(}, "normalizer": {"type": "NFC"},
      "added_tokens": [{"id": 10, "content": "e\u0301a", "special": false, "normalized": true}]})";
  EXPECT_EQ(Tokenizer::from_json_string(added, "added")
                .encode("\xC3\xA9"
                        "a" +
                        decomposed_e + "a"),
            (Ids{10, 10}));
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
    for (const std::string_view s :
         {"<|endoftext|>", "<|im_start|>", "<|im_end|>", "<s>", "</s>"}) {
      for (size_t pos; (pos = text.find(s)) != std::string::npos;) text.erase(pos, s.size());
    }
  }
  const Ids ids = t.encode(text, false);
  EXPECT_LT(ids.size(), text.size() * 3 / 4) << "merges should compress the sample";
  EXPECT_EQ(t.decode(ids), text);
  for (const std::string line :
       {"", " ", "  leading spaces", "tab\tand\nnewline\n", "😀👨‍👩‍👧", "a\u0301"}) {
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

INSTANTIATE_TEST_SUITE_P(Styles, TrainedStyles,
                         ::testing::Values(BpeStyle::ByteLevel, BpeStyle::SentencePiece),
                         [](const auto& info) {
                           return info.param == BpeStyle::ByteLevel ? "ByteLevel" : "SentencePiece";
                         });

TEST(TokenizerUtf8, LossyAndPartial) {
  EXPECT_EQ(utf8::lossy("a\xF0\x9F\x98"), "a\xEF\xBF\xBD");  // one U+FFFD for the maximal subpart
  EXPECT_TRUE(utf8::ends_with_partial_sequence("a\xF0\x9F"));
  EXPECT_FALSE(utf8::ends_with_partial_sequence("a\xF0\x9F\x98\x80"));
}

}  // namespace
}  // namespace sy
