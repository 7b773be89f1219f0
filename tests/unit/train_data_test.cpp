// Training data pipeline: the corpus split (covering, disjoint, deterministic), the King James
// text decoded from bible-kjv-text, the corpus tokenizer's round trip, and the batch sampler
// (a pure function of seed and step, rank rows that add up to the full batch, windows in bounds).
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <fstream>
#include <limits>
#include <set>
#include <sstream>

#include "io/file_util.h"
#include "temp_dir.h"
#include "tokenizer/bpe_trainer.h"
#include "tokenizer/tokenizer.h"
#include "train/corpus.h"
#include "train/kjv_text.h"
#include "train/token_data.h"
#include "util/error.h"

namespace sy::train {
namespace {

std::vector<std::string> split_on_eos(const std::string& text) {
  std::vector<std::string> docs;
  for (size_t begin = 0; begin < text.size();) {
    const size_t end = text.find(kEndOfText, begin);
    EXPECT_NE(end, std::string::npos) << "every document ends with " << kEndOfText;
    if (end == std::string::npos) break;
    docs.push_back(text.substr(begin, end - begin));
    begin = end + kEndOfText.size();
  }
  return docs;
}

std::string read_sample() {
  return io::read_text_file(std::string(SY_SOURCE_DIR) + "/tests/tokenizer/sample_unicode.txt");
}

// ---- Corpus ----

TEST(TrainCorpus, ValidationDocsAreEvenlySpread) {
  std::vector<int64_t> val;
  for (int64_t i = 0; i < 1189; ++i)
    if (is_validation_doc(i, 0.05)) val.push_back(i);
  ASSERT_EQ(val.size(), 59u);  // round(1189 * 0.05)
  EXPECT_EQ(val.front(), 9);
  for (size_t k = 1; k < val.size(); ++k) EXPECT_EQ(val[k] - val[k - 1], 20);
  for (int64_t i = 0; i < 100; ++i) EXPECT_FALSE(is_validation_doc(i, 0.0));
}

TEST(TrainCorpus, SplitCoversDisjointAndDeterministic) {
  std::vector<std::string> docs;
  for (int i = 0; i < 100; ++i) docs.push_back("document " + std::to_string(i) + "\n");
  const Corpus c = split_documents(docs, 0.1, "numbers");
  EXPECT_EQ(c.num_train_docs, 90);
  EXPECT_EQ(c.num_val_docs, 10);
  const std::vector<std::string> train = split_on_eos(c.train_text), val = split_on_eos(c.val_text);
  std::multiset<std::string> all(train.begin(), train.end());
  all.insert(val.begin(), val.end());
  EXPECT_EQ(all, std::multiset<std::string>(docs.begin(), docs.end()));  // covering and disjoint
  EXPECT_EQ(val.front(), "document 4\n");
  EXPECT_EQ(val.back(), "document 94\n");  // spread over the whole corpus
  const Corpus again = split_documents(docs, 0.1, "numbers");
  EXPECT_EQ(again.train_text, c.train_text);
  EXPECT_EQ(again.val_text, c.val_text);
  const Corpus no_val = split_documents(docs, 0.0, "numbers");
  EXPECT_TRUE(no_val.val_text.empty());
  EXPECT_EQ(no_val.num_train_docs, 100);
}

TEST(TrainCorpus, TextFileDocumentsAreParagraphsOrLines) {
  testing::TempDir dir;
  const std::string paragraphs = dir.file("paragraphs.txt"), lines = dir.file("lines.txt");
  io::write_text_file_atomic(paragraphs, "a1\r\na2\n\n\n  \nb1\n\nc1\nc2\nc3");
  io::write_text_file_atomic(lines, "one\ntwo\nthree\nfour\n");
  EXPECT_EQ(text_documents(io::read_text_file(paragraphs)),
            (std::vector<std::string>{"a1\na2\n", "b1\n", "c1\nc2\nc3\n"}));
  EXPECT_EQ(text_documents(io::read_text_file(lines)),
            (std::vector<std::string>{"one\n", "two\n", "three\n", "four\n"}));
  const Corpus c = load_corpus(lines, 0.25);
  EXPECT_EQ(c.num_train_docs, 3);
  EXPECT_EQ(c.num_val_docs, 1);
  EXPECT_EQ(c.val_text, "two\n" + std::string(kEndOfText));
  EXPECT_NE(c.description.find("lines.txt"), std::string::npos) << c.description;
}

TEST(TrainCorpus, BadInputsFailWithMessages) {
  testing::TempDir dir;
  auto expect_error = [](auto&& fn, const std::string& needle) {
    try {
      fn();
      ADD_FAILURE() << "no error; expected one mentioning '" << needle << "'";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  expect_error([&] { load_corpus(dir.file("missing.txt")); }, "missing.txt");
  io::write_text_file_atomic(dir.file("blank.txt"), "\n  \n\n");
  expect_error([&] { load_corpus(dir.file("blank.txt")); }, "no text");
  io::write_text_file_atomic(dir.file("latin1.txt"), "caf\xe9\n");
  expect_error([&] { load_corpus(dir.file("latin1.txt")); }, "UTF-8");
  io::write_text_file_atomic(dir.file("ok.txt"), "a\nb\nc\n");
  for (double f : {-0.1, 1.0, std::nan("")})
    expect_error([&] { load_corpus(dir.file("ok.txt"), f); }, "fraction");
  expect_error([&] { load_corpus(dir.file("ok.txt"), 0.1); }, "too few");  // round(3 * 0.1) = 0
  io::write_text_file_atomic(dir.file("fake.data"),
                             "not a bible data file at all, just text padding it out .......");
  expect_error([&] { read_brs_text(dir.file("fake.data")); }, "EC02");
  expect_error([&] { read_brs_text(dir.file("none.data")); }, "bible-kjv-text");
}

TEST(TrainCorpus, KingJamesBibleFromDebianPackage) {
  if (!io::file_exists(kKjvDataPath))
    GTEST_SKIP() << kKjvDataPath << " missing: run scripts/install-deps.sh";
  const std::string raw = read_brs_text();
  EXPECT_EQ(raw.size(), 4404475u);
  EXPECT_EQ(raw.substr(raw.size() - 20), "with you all. Amen.\n");
  const Corpus c = load_corpus("bible-kjv");
  EXPECT_EQ(c.num_train_docs + c.num_val_docs, 1189);
  EXPECT_EQ(c.num_val_docs, 59);
  EXPECT_EQ(c.train_text.rfind(
                "Genesis 1\n1 In the beginning God created the heaven and the earth.\n", 0),
            0u);
  EXPECT_EQ(c.val_text.rfind("Genesis 10\n1 Now these are the generations of the sons of Noah", 0),
            0u);
  EXPECT_NE(c.val_text.find("Revelation 3\n"), std::string::npos);  // both ends of the book
  EXPECT_NE(c.train_text.find("Revelation 22\n"), std::string::npos);

  // Damaged copies fail with sy::Error, never crash or return garbage.
  testing::TempDir dir;
  std::string data = io::read_text_file(kKjvDataPath);
  io::write_text_file_atomic(dir.file("short.data"), data.substr(0, data.size() / 2));
  EXPECT_THROW(read_brs_text(dir.file("short.data")), Error);
  for (size_t i = 0; i < 64; ++i) data[300000 + i * 7] ^= char(0x5a);
  io::write_text_file_atomic(dir.file("flipped.data"), data);
  EXPECT_THROW(load_kjv_chapters(dir.file("flipped.data")), Error);
}

// ---- Tokenizer ----

TEST(TrainTokenizer, RoundTripsCorpusWithEos) {
  const Corpus c = split_documents(text_documents(read_sample()), 0.2, "sample");
  const std::string json = train_corpus_tokenizer(c.train_text, 400);
  EXPECT_EQ(json, train_corpus_tokenizer(c.train_text, 400)) << "training must be deterministic";
  const Tokenizer tok = Tokenizer::from_json_string(json, "corpus tokenizer");
  const int32_t eos = eos_token_id(tok);
  EXPECT_EQ(eos, tok.vocab_size() - 1);
  EXPECT_TRUE(tok.is_special(eos));
  for (const std::string* text : {&c.train_text, &c.val_text}) {
    const std::vector<int32_t> ids = tokenize_corpus(tok, *text);
    EXPECT_EQ(tok.decode(ids), *text);
    EXPECT_EQ(ids, tok.encode(*text))
        << "documents encoded one by one match encoding the whole text";
    EXPECT_EQ(std::count(ids.begin(), ids.end(), eos), int64_t(split_on_eos(*text).size()));
    EXPECT_EQ(ids.back(), eos);
  }
  EXPECT_LT(tokenize_corpus(tok, c.train_text).size() * 3, c.train_text.size() * 2)
      << "merges were learned";
}

TEST(TrainTokenizer, NeedsAnEosToken) {
  BpeTrainOptions o;
  o.vocab_size = 300;
  const Tokenizer plain =
      Tokenizer::from_json_string(train_bpe_tokenizer_json("abc abc abd", o), "plain");
  EXPECT_THROW(tokenize_corpus(plain, "abc"), Error);
  EXPECT_THROW(train_corpus_tokenizer("abc", 100), Error);  // fewer ids than the 256 bytes + eos
}

// ---- Batch sampler ----

// Tokens equal to their positions make every window's start readable from its first token.
std::vector<int32_t> iota_tokens(int32_t n, int32_t from = 0) {
  std::vector<int32_t> v(size_t(n), 0);
  for (int32_t i = 0; i < n; ++i) v[size_t(i)] = from + i;
  return v;
}

struct Batch {
  std::vector<int32_t> inputs, targets;
  bool operator==(const Batch&) const = default;
};

Batch train_batch(const BatchSampler& s, int64_t step) {
  Batch b{std::vector<int32_t>(size_t(s.batch_size() * s.seq_len())), {}};
  b.targets = b.inputs;
  s.train_batch(step, b.inputs.data(), b.targets.data());
  return b;
}

TEST(TrainSampler, TrainBatchesArePureFunctionsOfSeedAndStep) {
  const BatchSampler s(iota_tokens(5000), {}, 6, 32, 1234);
  const BatchSampler resumed(iota_tokens(5000), {}, 6, 32, 1234);
  const BatchSampler other_seed(iota_tokens(5000), {}, 6, 32, 99);
  EXPECT_EQ(train_batch(s, 0), train_batch(s, 0));
  EXPECT_EQ(train_batch(s, 777), train_batch(resumed, 777));
  EXPECT_NE(train_batch(s, 0), train_batch(s, 1));
  EXPECT_NE(train_batch(s, 5), train_batch(other_seed, 5));
  std::set<int64_t> starts;
  for (int64_t step = 0; step < 200; ++step) {
    const Batch b = train_batch(s, step);
    for (int64_t r = 0; r < 6; ++r) {
      const int64_t start = s.train_window_start(step, r);
      ASSERT_GE(start, 0);
      ASSERT_LE(start + 32, 4999);  // the last target is still a token
      starts.insert(start);
      for (int64_t t = 0; t < 32; ++t) {
        ASSERT_EQ(b.inputs[size_t(r * 32 + t)], start + t);
        ASSERT_EQ(b.targets[size_t(r * 32 + t)], start + t + 1);
      }
    }
  }
  EXPECT_GT(starts.size(), 1000u)
      << "uniform draws give about 4968 * (1 - exp(-1200 / 4968)) = 1066";
  EXPECT_LT(*starts.begin(), 100);
  EXPECT_GT(*starts.rbegin(), 4968 - 100);
}

TEST(TrainSampler, RankRowsAddUpToTheFullBatch) {
  const int64_t B = 7, S = 16;
  const BatchSampler s(iota_tokens(3000), iota_tokens(500, 100000), B, S, 7);
  const Batch full = train_batch(s, 42);
  std::vector<int32_t> val_full(size_t(B * S)), val_targets(size_t(B * S));
  s.val_batch(1, val_full.data(), val_targets.data());
  for (int n = 1; n <= 5; ++n) {
    Batch joined, val_joined;
    for (int r = 0; r < n; ++r) {
      const RowRange rows = rank_rows(B, r, n);
      EXPECT_EQ(rows.first, int64_t(joined.inputs.size()) / S);
      std::vector<int32_t> in(size_t(rows.count * S)), tg(in.size()), vin(in.size()),
          vtg(in.size());
      s.train_rows(42, rows.first, rows.count, in.data(), tg.data());
      s.val_rows(1, rows.first, rows.count, vin.data(), vtg.data());
      joined.inputs.insert(joined.inputs.end(), in.begin(), in.end());
      joined.targets.insert(joined.targets.end(), tg.begin(), tg.end());
      val_joined.inputs.insert(val_joined.inputs.end(), vin.begin(), vin.end());
    }
    EXPECT_EQ(joined, full) << n << " ranks";
    EXPECT_EQ(val_joined.inputs, val_full) << n << " ranks";
  }
}

TEST(TrainSampler, ValidationWindowsAreContiguousAndDisjoint) {
  const int64_t B = 3, S = 10;
  const BatchSampler s(iota_tokens(100), iota_tokens(95), B, S, 0);
  ASSERT_EQ(s.num_val_batches(), 3);  // (95 - 1) / 10 = 9 windows
  std::vector<int32_t> in(size_t(B * S)), tg(in.size());
  for (int64_t i = 0; i < 3; ++i) {
    s.val_batch(i, in.data(), tg.data());
    for (int64_t k = 0; k < B * S; ++k) {  // window i * B + r starts at (i * B + r) * S
      EXPECT_EQ(in[size_t(k)], i * B * S + k);
      EXPECT_EQ(tg[size_t(k)], i * B * S + k + 1);
    }
  }
  EXPECT_THROW(s.val_batch(3, in.data(), tg.data()), Error);
  EXPECT_THROW(s.val_batch(-1, in.data(), tg.data()), Error);
  EXPECT_EQ(BatchSampler(iota_tokens(100), {}, B, S, 0).num_val_batches(), 0);
}

TEST(TrainSampler, BadInputsFail) {
  EXPECT_THROW(BatchSampler(iota_tokens(32), {}, 2, 32, 0), Error);  // needs S + 1 tokens
  EXPECT_NO_THROW(BatchSampler(iota_tokens(33), {}, 2, 32, 0));
  EXPECT_THROW(BatchSampler(iota_tokens(100), {}, 0, 8, 0), Error);
  EXPECT_THROW(BatchSampler(iota_tokens(100), {}, 2, 0, 0), Error);
  EXPECT_THROW(BatchSampler(iota_tokens(100), iota_tokens(16), 2, 8, 0), Error);  // val < one batch
  const BatchSampler s(iota_tokens(100), {}, 4, 8, 0);
  std::vector<int32_t> in(64), tg(64);
  EXPECT_THROW(s.train_rows(0, 3, 2, in.data(), tg.data()), Error);
  EXPECT_THROW(s.train_rows(-1, 0, 1, in.data(), tg.data()), Error);
  EXPECT_THROW(rank_rows(4, 2, 2), Error);
  EXPECT_THROW(rank_rows(4, 0, 0), Error);
}

}  // namespace
}  // namespace sy::train
