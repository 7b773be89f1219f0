// BPE training: pre-tokenize the corpus with the tokenizer's own pipeline, count unique
// words, then merge the most frequent pair repeatedly, updating pair counts only in the
// words that contain the merged pair (a lazy max-heap picks the next pair).
#include "tokenizer/bpe_trainer.h"

#include <algorithm>
#include <map>
#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "tokenizer/bpe_trainer_config.h"
#include "tokenizer/tokenizer_impl.h"
#include "tokenizer/utf8.h"

namespace sy {
namespace {

uint64_t key(int32_t a, int32_t b) {
  return (static_cast<uint64_t>(static_cast<uint32_t>(a)) << 32) | static_cast<uint32_t>(b);
}

struct Vocab {
  std::vector<std::string> tokens;
  StringIdMap ids;
  int32_t add(const std::string& t) {
    auto it = ids.find(t);
    if (it != ids.end()) return it->second;
    const auto id = static_cast<int32_t>(tokens.size());
    tokens.push_back(t);
    ids.emplace(t, id);
    return id;
  }
};

// Unique pre-tokenized words of the corpus with their counts, in sorted order.
std::map<std::string, int64_t> count_words(std::string_view corpus, const TrainerPipeline& pipeline,
                                           const std::vector<std::string>& specials) {
  ojson skeleton = {
      {"added_tokens", ojson::array()},
      {"normalizer", pipeline.normalizer},
      {"pre_tokenizer", pipeline.training_pre_tokenizer},
      {"model", {{"type", "BPE"}, {"vocab", ojson::object()}, {"merges", ojson::array()}}}};
  for (size_t i = 0; i < specials.size(); ++i) {
    skeleton["added_tokens"].push_back(
        {{"id", i}, {"content", specials[i]}, {"special", true}, {"normalized", false}});
  }
  // The same parsers as Tokenizer::from_json_string, so training splits exactly like encode().
  Tokenizer::Impl impl;
  JsonCtx ctx{"<bpe trainer>"};
  const json plain = json::parse(skeleton.dump());
  impl.normalizer = parse_normalizer(plain["normalizer"], "normalizer", ctx);
  impl.pre_tokenizer = parse_pre_tokenizer(plain["pre_tokenizer"], "pre_tokenizer", ctx);
  for (size_t i = 0; i < specials.size(); ++i) {
    AddedToken t;
    t.id = static_cast<int32_t>(i);
    t.content = specials[i];
    t.special = true;
    t.normalized = false;
    impl.raw_matcher.add(t, t.content);
  }
  // Feed the corpus in newline-aligned chunks: encode() sees multi-line text, and the
  // regexes only look a few characters around a line break.
  std::unordered_map<std::string, int64_t> counts;
  const size_t kChunk = 1 << 16;
  for (size_t begin = 0; begin < corpus.size();) {
    size_t end = std::min(corpus.size(), begin + kChunk);
    if (end < corpus.size()) {
      const size_t nl = corpus.find('\n', end);
      end = nl == std::string_view::npos ? corpus.size() : nl + 1;
    }
    impl.split_words(
        corpus.substr(begin, end - begin), [](int32_t) {},
        [&](const std::string& w) { ++counts[w]; });
    begin = end;
  }
  return {counts.begin(), counts.end()};
}

}  // namespace

std::string train_bpe_tokenizer_json(std::string_view corpus, const BpeTrainOptions& o) {
  const size_t bad = utf8::find_invalid(corpus);
  if (bad != std::string_view::npos)
    fail("bpe trainer: corpus is not valid UTF-8 (byte offset {})", bad);
  const TrainerPipeline pipeline = trainer_pipeline(o);
  const bool sp = o.style == BpeStyle::SentencePiece;

  std::vector<std::string> specials;  // added tokens in id order of appearance
  Vocab vocab;
  if (sp) {
    for (const char* t : {"<unk>", "<s>", "</s>"}) vocab.add(t);
    for (int b = 0; b < 256; ++b) vocab.add(fmt::format("<0x{:02X}>", b));
  } else {
    for (char32_t c : utf8::byte_to_char()) vocab.add(utf8::encode(c));
  }
  std::vector<std::string> extra;
  for (const std::string& s : o.special_tokens) {
    if (s.empty()) fail("bpe trainer: empty special token");
    if (std::find(extra.begin(), extra.end(), s) == extra.end() && !(sp && vocab.ids.count(s)))
      extra.push_back(s);
  }
  const int64_t num_fixed = static_cast<int64_t>(vocab.tokens.size() + extra.size());
  if (o.vocab_size < num_fixed) {
    fail("bpe trainer: vocab_size {} is smaller than the {} fixed tokens of this style",
         o.vocab_size, num_fixed);
  }
  const auto model_budget = static_cast<size_t>(o.vocab_size - static_cast<int64_t>(extra.size()));

  std::vector<std::string> all_specials = extra;
  if (sp) all_specials.insert(all_specials.end(), {"<unk>", "<s>", "</s>"});
  const std::map<std::string, int64_t> word_counts = count_words(corpus, pipeline, all_specials);

  // Symbols of each word: characters; with byte fallback only the frequent characters
  // get their own token (the rest are bytes at encode time and never merge).
  if (sp) {
    std::unordered_map<std::string, int64_t> char_counts;
    for (const auto& [w, n] : word_counts) {
      for (size_t pos = 0; pos < w.size();) {
        const size_t start = pos;
        utf8::next(w, pos);
        char_counts[w.substr(start, pos - start)] += n;
      }
    }
    std::vector<std::pair<std::string, int64_t>> chars(char_counts.begin(), char_counts.end());
    std::sort(chars.begin(), chars.end(), [](const auto& a, const auto& b) {
      return a.second != b.second ? a.second > b.second : a.first < b.first;
    });
    const size_t max_chars = (model_budget - vocab.tokens.size()) / 2;
    for (size_t i = 0; i < chars.size() && i < max_chars && chars[i].second >= o.min_frequency; ++i)
      vocab.add(chars[i].first);
  }
  std::vector<std::vector<int32_t>> words;
  std::vector<int64_t> freq;
  for (const auto& [w, n] : word_counts) {
    std::vector<int32_t> syms;
    for (size_t pos = 0; pos < w.size();) {
      const size_t start = pos;
      utf8::next(w, pos);
      auto it = vocab.ids.find(std::string_view(w).substr(start, pos - start));
      syms.push_back(it == vocab.ids.end() ? -1 : it->second);  // -1: byte-fallback character
    }
    words.push_back(std::move(syms));
    freq.push_back(n);
  }

  std::unordered_map<uint64_t, int64_t> pair_counts;
  std::unordered_map<uint64_t, std::vector<int32_t>> where;
  auto for_pairs = [](const std::vector<int32_t>& s, auto&& fn) {
    for (size_t i = 0; i + 1 < s.size(); ++i) {
      if (s[i] >= 0 && s[i + 1] >= 0) fn(key(s[i], s[i + 1]));
    }
  };
  for (size_t w = 0; w < words.size(); ++w) {
    for_pairs(words[w], [&](uint64_t k) {
      pair_counts[k] += freq[w];
      auto& list = where[k];
      if (list.empty() || list.back() != static_cast<int32_t>(w))
        list.push_back(static_cast<int32_t>(w));
    });
  }
  struct Entry {
    int64_t count;
    uint64_t pair;
    bool operator<(const Entry& o) const {
      return count != o.count ? count < o.count : pair > o.pair;
    }
  };
  std::priority_queue<Entry> heap;
  for (const auto& [k, n] : pair_counts) heap.push({n, k});

  std::vector<std::pair<int32_t, int32_t>> merges;
  while (vocab.tokens.size() < model_budget && !heap.empty()) {
    const Entry top = heap.top();
    heap.pop();
    const int64_t current = pair_counts.count(top.pair) ? pair_counts[top.pair] : 0;
    if (current != top.count) {  // stale: counts only fall for existing pairs, so re-queue
      if (current > 0) heap.push({current, top.pair});
      continue;
    }
    if (current < o.min_frequency) break;
    const auto a = static_cast<int32_t>(top.pair >> 32),
               b = static_cast<int32_t>(top.pair & 0xFFFFFFFFu);
    const int32_t merged = vocab.add(vocab.tokens[a] + vocab.tokens[b]);
    merges.emplace_back(a, b);
    std::vector<int32_t> affected = std::move(where[top.pair]);
    where.erase(top.pair);
    std::sort(affected.begin(), affected.end());
    affected.erase(std::unique(affected.begin(), affected.end()), affected.end());
    std::unordered_set<uint64_t> fresh;
    for (int32_t w : affected) {
      std::vector<int32_t>& s = words[w];
      bool has = false;
      for (size_t i = 0; i + 1 < s.size() && !has; ++i) has = s[i] == a && s[i + 1] == b;
      if (!has) continue;
      for_pairs(s, [&](uint64_t k) { pair_counts[k] -= freq[w]; });
      std::vector<int32_t> next;
      next.reserve(s.size());
      for (size_t i = 0; i < s.size(); ++i) {
        if (i + 1 < s.size() && s[i] == a && s[i + 1] == b) {
          next.push_back(merged);
          ++i;
        } else {
          next.push_back(s[i]);
        }
      }
      s = std::move(next);
      for_pairs(s, [&](uint64_t k) {
        pair_counts[k] += freq[w];
        const auto l = static_cast<int32_t>(k >> 32), r = static_cast<int32_t>(k & 0xFFFFFFFFu);
        if (l == merged || r == merged) {
          fresh.insert(k);
          auto& list = where[k];
          if (list.empty() || list.back() != w) list.push_back(w);
        }
      });
    }
    pair_counts.erase(top.pair);
    std::vector<uint64_t> sorted_fresh(fresh.begin(), fresh.end());
    std::sort(sorted_fresh.begin(), sorted_fresh.end());
    for (uint64_t k : sorted_fresh) heap.push({pair_counts[k], k});
  }

  // Assemble tokenizer.json.
  ojson model_vocab = ojson::object();
  for (size_t i = 0; i < vocab.tokens.size(); ++i) model_vocab[vocab.tokens[i]] = i;
  ojson merge_list = ojson::array();
  for (auto [a, b] : merges) merge_list.push_back({vocab.tokens[a], vocab.tokens[b]});
  ojson added = ojson::array();
  auto add_special = [&](const std::string& content, size_t id) {
    added.push_back({{"id", id},
                     {"content", content},
                     {"single_word", false},
                     {"lstrip", false},
                     {"rstrip", false},
                     {"normalized", false},
                     {"special", true}});
  };
  if (sp) {
    for (size_t i = 0; i < 3; ++i) add_special(vocab.tokens[i], i);
  }
  for (size_t i = 0; i < extra.size(); ++i) add_special(extra[i], vocab.tokens.size() + i);

  ojson post = pipeline.post_processor;
  if (sp) {
    const ojson bos = {{"SpecialToken", {{"id", "<s>"}, {"type_id", 0}}}};
    post = {{"type", "TemplateProcessing"},
            {"single", {bos, {{"Sequence", {{"id", "A"}, {"type_id", 0}}}}}},
            {"pair",
             {bos,
              {{"Sequence", {{"id", "A"}, {"type_id", 0}}}},
              bos,
              {{"Sequence", {{"id", "B"}, {"type_id", 1}}}}}},
            {"special_tokens", {{"<s>", {{"id", "<s>"}, {"ids", {1}}, {"tokens", {"<s>"}}}}}}};
  }
  ojson out = {{"version", "1.0"},
               {"truncation", nullptr},
               {"padding", nullptr},
               {"added_tokens", added},
               {"normalizer", pipeline.normalizer},
               {"pre_tokenizer", pipeline.pre_tokenizer},
               {"post_processor", post},
               {"decoder", pipeline.decoder},
               {"model",
                {{"type", "BPE"},
                 {"dropout", nullptr},
                 {"unk_token", sp ? ojson("<unk>") : ojson(nullptr)},
                 {"continuing_subword_prefix", nullptr},
                 {"end_of_word_suffix", nullptr},
                 {"fuse_unk", sp},
                 {"byte_fallback", sp},
                 {"ignore_merges", false},
                 {"vocab", model_vocab},
                 {"merges", merge_list}}}};
  return out.dump(1) + "\n";
}

}  // namespace sy
