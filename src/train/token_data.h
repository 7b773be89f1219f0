// From corpus text to training batches: a byte-level BPE tokenizer trained on the corpus, the
// token stream of a Corpus text, and a sampler whose batches are pure functions of
// (seed, step, row), so a resumed run sees the same batches and MPI ranks take disjoint rows.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "tokenizer/tokenizer.h"

namespace sy::train {

// A Hugging Face tokenizer.json: byte-level BPE with Qwen2-style splits, `vocab_size` ids in all,
// the last being kEndOfText (special; the eos token). Deterministic; the whole King James Bible
// trains in well under a second. Fewer ids when the text has too few repeated pairs to merge.
std::string train_corpus_tokenizer(const std::string& text, int vocab_size);

// The eos id of a corpus tokenizer; sy::Error when it has no kEndOfText token.
int32_t eos_token_id(const Tokenizer& tokenizer);

// Token ids of a Corpus text: each document encoded on its own, each kEndOfText becoming eos.
// decode() of the result gives `text` back.
std::vector<int32_t> tokenize_corpus(const Tokenizer& tokenizer, const std::string& text);

// Rows [first, first + count) of a batch of `batch_size` rows that rank `rank` of `num_ranks`
// takes: rank r gets rows r * B / n .. (r + 1) * B / n.
struct RowRange {
  int64_t first = 0, count = 0;
};
RowRange rank_rows(int64_t batch_size, int rank, int num_ranks);

// Windows of seq_len + 1 tokens, returned as inputs [rows, S] and targets [rows, S] (the inputs
// shifted by one). Training windows start at random positions, a hash of (seed, step, row);
// validation windows are fixed, contiguous and non-overlapping: window j of the validation
// stream is tokens [j * S, j * S + S], and batch i holds windows i * B .. i * B + B - 1.
class BatchSampler {
 public:
  // Throws sy::Error for batch_size or seq_len < 1, a training stream shorter than seq_len + 1
  // tokens, or a non-empty validation stream too short for one batch (empty: no validation).
  BatchSampler(std::vector<int32_t> train_tokens, std::vector<int32_t> val_tokens,
               int64_t batch_size, int64_t seq_len, uint64_t seed);

  int64_t batch_size() const { return batch_size_; }
  int64_t seq_len() const { return seq_len_; }
  const std::vector<int32_t>& train_tokens() const { return train_; }
  const std::vector<int32_t>& val_tokens() const { return val_; }

  // Where row `row` of training batch `step` starts in train_tokens().
  int64_t train_window_start(int64_t step, int64_t row) const;
  // Rows [first_row, first_row + num_rows) of training batch `step`.
  // inputs, targets: [num_rows, S]
  void train_rows(int64_t step, int64_t first_row, int64_t num_rows, int32_t* inputs,
                  int32_t* targets) const;
  void train_batch(int64_t step, int32_t* inputs, int32_t* targets) const {
    train_rows(step, 0, batch_size_, inputs, targets);
  }

  int64_t num_val_batches() const;
  void val_rows(int64_t i, int64_t first_row, int64_t num_rows, int32_t* inputs,
                int32_t* targets) const;
  void val_batch(int64_t i, int32_t* inputs, int32_t* targets) const {
    val_rows(i, 0, batch_size_, inputs, targets);
  }

 private:
  void check_rows(int64_t first_row, int64_t num_rows) const;
  void copy_window(const std::vector<int32_t>& tokens, int64_t start, int32_t* inputs,
                   int32_t* targets) const;

  std::vector<int32_t> train_, val_;
  int64_t batch_size_, seq_len_;
  uint64_t seed_;
};

}  // namespace sy::train
