#include "train/token_data.h"

#include <algorithm>

#include "tokenizer/bpe_trainer.h"
#include "train/corpus.h"
#include "util/error.h"
#include "util/splitmix64.h"

namespace sy::train {

std::string train_corpus_tokenizer(const std::string& text, int vocab_size) {
  BpeTrainOptions o;
  o.vocab_size = vocab_size;
  o.style = BpeStyle::ByteLevel;
  o.preset = SplitPreset::Qwen2;
  o.special_tokens = {std::string(kEndOfText)};
  return train_bpe_tokenizer_json(text, o);
}

int32_t eos_token_id(const Tokenizer& tokenizer) {
  const auto eos = tokenizer.token_to_id(kEndOfText);
  if (!eos) fail("tokenizer has no {} token to end documents with", kEndOfText);
  return *eos;
}

std::vector<int32_t> tokenize_corpus(const Tokenizer& tokenizer, const std::string& text) {
  const int32_t eos = eos_token_id(tokenizer);
  std::vector<int32_t> ids;
  ids.reserve(text.size() / 3);
  const std::string_view all(text);
  for (size_t begin = 0; begin < all.size();) {
    size_t end = all.find(kEndOfText, begin);
    const bool has_eos = end != std::string_view::npos;
    if (!has_eos) end = all.size();
    if (end > begin) {
      const std::vector<int32_t> doc = tokenizer.encode(all.substr(begin, end - begin), false);
      ids.insert(ids.end(), doc.begin(), doc.end());
    }
    if (has_eos) ids.push_back(eos);
    begin = has_eos ? end + kEndOfText.size() : end;
  }
  return ids;
}

RowRange rank_rows(int64_t batch_size, int rank, int num_ranks) {
  if (num_ranks < 1 || rank < 0 || rank >= num_ranks)
    fail("rank {} of {} ranks is out of range", rank, num_ranks);
  const int64_t first = batch_size * rank / num_ranks, next = batch_size * (rank + 1) / num_ranks;
  return {first, next - first};
}

BatchSampler::BatchSampler(std::vector<int32_t> train_tokens, std::vector<int32_t> val_tokens,
                           int64_t batch_size, int64_t seq_len, uint64_t seed)
    : train_(std::move(train_tokens)),
      val_(std::move(val_tokens)),
      batch_size_(batch_size),
      seq_len_(seq_len),
      seed_(seed) {
  if (batch_size < 1 || seq_len < 1)
    fail("batch size {} and sequence length {} must be positive", batch_size, seq_len);
  if (int64_t(train_.size()) < seq_len + 1) {
    fail("the training text has {} tokens, fewer than one window of sequence length + 1 = {}",
         train_.size(), seq_len + 1);
  }
  if (!val_.empty() && num_val_batches() == 0) {
    fail("the validation text has {} tokens, too few for one batch of {} windows of {} + 1 tokens",
         val_.size(), batch_size, seq_len);
  }
}

void BatchSampler::check_rows(int64_t first_row, int64_t num_rows) const {
  if (first_row < 0 || num_rows < 0 || first_row + num_rows > batch_size_) {
    fail("rows [{}, {}) are outside a batch of {}", first_row, first_row + num_rows, batch_size_);
  }
}

void BatchSampler::copy_window(const std::vector<int32_t>& tokens, int64_t start, int32_t* inputs,
                               int32_t* targets) const {
  SY_ASSERT(start >= 0 && start + seq_len_ + 1 <= int64_t(tokens.size()));
  std::copy_n(tokens.data() + start, seq_len_, inputs);
  std::copy_n(tokens.data() + start + 1, seq_len_, targets);
}

int64_t BatchSampler::train_window_start(int64_t step, int64_t row) const {
  if (step < 0) fail("training step {} is negative", step);
  check_rows(row, 1);
  const uint64_t h = splitmix64(splitmix64(splitmix64(seed_) + uint64_t(step)) + uint64_t(row));
  const uint64_t num_starts = train_.size() - uint64_t(seq_len_);  // starts 0 .. N - S - 1
  return int64_t((unsigned __int128)h * num_starts >> 64);         // uniform without modulo bias
}

void BatchSampler::train_rows(int64_t step, int64_t first_row, int64_t num_rows, int32_t* inputs,
                              int32_t* targets) const {
  check_rows(first_row, num_rows);
  for (int64_t r = 0; r < num_rows; ++r) {
    copy_window(train_, train_window_start(step, first_row + r), inputs + r * seq_len_,
                targets + r * seq_len_);
  }
}

int64_t BatchSampler::num_val_batches() const {
  if (val_.empty()) return 0;
  const int64_t num_windows = (int64_t(val_.size()) - 1) / seq_len_;
  return num_windows / batch_size_;
}

void BatchSampler::val_rows(int64_t i, int64_t first_row, int64_t num_rows, int32_t* inputs,
                            int32_t* targets) const {
  if (i < 0 || i >= num_val_batches())
    fail("validation batch {} is outside [0, {})", i, num_val_batches());
  check_rows(first_row, num_rows);
  for (int64_t r = 0; r < num_rows; ++r) {
    const int64_t window = i * batch_size_ + first_row + r;
    copy_window(val_, window * seq_len_, inputs + r * seq_len_, targets + r * seq_len_);
  }
}

}  // namespace sy::train
