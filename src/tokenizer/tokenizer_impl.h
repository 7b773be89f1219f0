// Tokenizer::Impl: the parsed pipeline. Internal to src/tokenizer (the trainer reuses the
// normalizer + pre-tokenizer to split its corpus exactly as encode() will).
#pragma once

#include <memory>
#include <unordered_map>

#include "tokenizer/added_tokens.h"
#include "tokenizer/bpe_model.h"
#include "tokenizer/components.h"
#include "tokenizer/tokenizer.h"

namespace sy {

struct Tokenizer::Impl {
  std::string origin;
  std::unique_ptr<Normalizer> normalizer;
  std::unique_ptr<PreTokenizer> pre_tokenizer;
  BpeModel model;
  std::unique_ptr<PostProcessor> post_processor;
  std::unique_ptr<Decoder> decoder;

  std::vector<AddedToken> added_tokens;
  std::unordered_map<int32_t, size_t> added_by_id;  // id -> index in added_tokens
  StringIdMap added_by_content;
  AddedTokenMatcher raw_matcher;  // special or normalized=false: matched before normalization
  AddedTokenMatcher normalized_matcher;  // normalized=true: matched in normalized text

  // Added-token split + normalization + pre-tokenization; the callback gets either an
  // added token id or a pre-tokenized word. `text` must be valid UTF-8.
  template <typename OnToken, typename OnWord>
  void split_words(std::string_view text, OnToken&& on_token, OnWord&& on_word) const;

  std::vector<int32_t> encode_ids(std::string_view text) const;  // without post-processing
};

template <typename OnToken, typename OnWord>
void Tokenizer::Impl::split_words(std::string_view text, OnToken&& on_token,
                                  OnWord&& on_word) const {
  for (Section& raw : raw_matcher.split(text)) {
    if (raw.id) {
      on_token(*raw.id);
      continue;
    }
    std::string normalized =
        normalizer ? normalizer->normalize(std::move(raw.text)) : std::move(raw.text);
    for (Section& sec : normalized_matcher.split(normalized)) {
      if (sec.id) {
        on_token(*sec.id);
        continue;
      }
      std::vector<Piece> pieces{Piece{std::move(sec.text), raw.offset == 0 && sec.offset == 0}};
      if (pre_tokenizer) pieces = pre_tokenizer->apply(std::move(pieces));
      for (const Piece& p : pieces) on_word(p.text);
    }
  }
}

}  // namespace sy
