// Training text for the trainer: the King James Bible (the default corpus) or a UTF-8 text file,
// cut into documents (chapters, paragraphs) and split deterministically into train and
// validation sets by whole documents spread evenly over the corpus, so both cover all of it.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

namespace sy::train {

// Ends every document in Corpus texts; the corpus tokenizer makes it a special token (eos), so
// the model learns where documents end and tokenization never merges across documents.
inline constexpr std::string_view kEndOfText = "<|endoftext|>";

struct Corpus {
  std::string train_text, val_text;  // documents, each followed by kEndOfText
  std::string description;           // one line for logs: source, documents, characters
  int64_t num_train_docs = 0, num_val_docs = 0;
};

// source: "bible-kjv" (the Debian package bible-kjv-text, one document per chapter) or the path
// of a UTF-8 text file (documents are paragraphs separated by blank lines, or lines when the file
// has no blank lines). val_fraction in [0, 1): 0 gives an empty validation set. Throws sy::Error
// for a missing file, empty or non-UTF-8 text, a bad fraction, or too few documents to split.
Corpus load_corpus(const std::string& source, double val_fraction = 0.05);

// The split itself: document i goes to validation when round(i * f) changes at i + 1, which
// picks round(n * f) documents at even spacing (every 20th for f = 0.05, from the 10th on).
bool is_validation_doc(int64_t index, double val_fraction);
Corpus split_documents(const std::vector<std::string>& docs, double val_fraction,
                       const std::string& name);

// Documents of a plain text: blank-line separated paragraphs (or lines), each ending in '\n'.
std::vector<std::string> text_documents(std::string_view text);

}  // namespace sy::train
