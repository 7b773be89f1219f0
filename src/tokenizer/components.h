// The pipeline stages of a Hugging Face tokenizer (normalizer, pre-tokenizer, decoder,
// post-processor) as small polymorphic objects built from tokenizer.json.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "tokenizer/json_util.h"
#include "tokenizer/regex.h"

namespace sy {

// A piece of text between pre-tokenization steps. at_origin: the piece starts at offset 0
// of the original input (Metaspace's prepend_scheme "first" needs it).
struct Piece {
  std::string text;
  bool at_origin = false;
};

class Normalizer {
 public:
  virtual ~Normalizer() = default;
  virtual std::string normalize(std::string text) const = 0;
};

class PreTokenizer {
 public:
  virtual ~PreTokenizer() = default;
  virtual std::vector<Piece> split(const Piece& piece) const = 0;
  std::vector<Piece> apply(std::vector<Piece> pieces) const;
};

class Decoder {
 public:
  virtual ~Decoder() = default;
  virtual std::vector<std::string> decode_chain(std::vector<std::string> tokens) const = 0;
};

// Resolves a special token string to its ids (TemplateProcessing's special_tokens map).
using TokenIdLookup = std::function<std::optional<int32_t>(const std::string&)>;

class PostProcessor {
 public:
  virtual ~PostProcessor() = default;
  virtual std::vector<int32_t> process(std::vector<int32_t> ids, bool add_special_tokens) const = 0;
};

// Each returns nullptr for a JSON null and throws sy::Error for unsupported types.
std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& path,
                                             const JsonCtx& ctx);
std::unique_ptr<PreTokenizer> parse_pre_tokenizer(const json& j, const std::string& path,
                                                  const JsonCtx& ctx);
std::unique_ptr<Decoder> parse_decoder(const json& j, const std::string& path, const JsonCtx& ctx);
std::unique_ptr<PostProcessor> parse_post_processor(const json& j, const std::string& path,
                                                    const JsonCtx& ctx,
                                                    const TokenIdLookup& lookup);

// {"String": s} or {"Regex": r} as used by Split, Replace.
Regex parse_pattern(const json& j, const std::string& path, const JsonCtx& ctx);

// How Split keeps the delimiters it finds (HF SplitDelimiterBehavior).
enum class SplitBehavior { Removed, Isolated, MergedWithPrevious, MergedWithNext, Contiguous };

// Splits `piece` at `matches` (sorted, non-overlapping byte ranges) the way HF's
// NormalizedString::split does; empty pieces are dropped.
std::vector<Piece> split_at_matches(const Piece& piece,
                                    const std::vector<std::pair<size_t, size_t>>& matches,
                                    SplitBehavior behavior, bool invert);

// Unicode White_Space, as Rust's char::is_whitespace.
bool is_unicode_whitespace(char32_t cp);

}  // namespace sy
