// Normalizers: Sequence, Prepend, Replace, Lowercase, Strip, and the Unicode normalization
// forms NFC/NFD/NFKC/NFKD (ICU, see unicode_normalize.h).
#include "tokenizer/components.h"
#include "tokenizer/unicode_normalize.h"
#include "tokenizer/utf8.h"

namespace sy {
namespace {

class SequenceNormalizer : public Normalizer {
 public:
  std::vector<std::unique_ptr<Normalizer>> steps;
  std::string normalize(std::string text) const override {
    for (const auto& step : steps) text = step->normalize(std::move(text));
    return text;
  }
};

class PrependNormalizer : public Normalizer {
 public:
  std::string prefix;
  std::string normalize(std::string text) const override {
    return text.empty() ? text : prefix + text;
  }
};

class ReplaceNormalizer : public Normalizer {
 public:
  ReplaceNormalizer(Regex p, std::string c) : pattern(std::move(p)), content(std::move(c)) {}
  Regex pattern;
  std::string content;
  std::string normalize(std::string text) const override {
    return pattern.replace_all(text, content);
  }
};

// Full lowercase mapping per code point, as HF's Rust NormalizedString::lowercase.
class LowercaseNormalizer : public Normalizer {
 public:
  std::string normalize(std::string text) const override { return unicode_lowercase(text); }
};

class UnicodeFormNormalizer : public Normalizer {
 public:
  explicit UnicodeFormNormalizer(NormalForm f) : form(f) {}
  NormalForm form;
  std::string normalize(std::string text) const override { return unicode_normalize(text, form); }
};

class StripNormalizer : public Normalizer {
 public:
  bool left = false, right = false;
  std::string normalize(std::string text) const override {
    size_t begin = 0, end = text.size();
    if (left) {
      while (begin < end) {
        size_t p = begin;
        if (!is_unicode_whitespace(utf8::next(text, p))) break;
        begin = p;
      }
    }
    if (right) {
      while (end > begin) {
        size_t start = end - 1;
        while (start > begin && (static_cast<unsigned char>(text[start]) & 0xC0) == 0x80) --start;
        size_t p = start;
        if (!is_unicode_whitespace(utf8::next(text, p))) break;
        end = start;
      }
    }
    return text.substr(begin, end - begin);
  }
};

}  // namespace

bool is_unicode_whitespace(char32_t cp) {
  return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
         (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
         cp == 0x205F || cp == 0x3000;
}

Regex parse_pattern(const json& j, const std::string& path, const JsonCtx& ctx) {
  if (!j.is_object())
    ctx.error(fmt::format("'{}' must be an object with \"String\" or \"Regex\"", path));
  const std::string where = fmt::format("tokenizer.json: '{}' in {}", path, ctx.origin);
  if (j.contains("String")) return Regex::literal(ctx.str(j, "String", path), where);
  if (j.contains("Regex")) return Regex(ctx.str(j, "Regex", path), where);
  ctx.error(fmt::format("'{}' must have \"String\" or \"Regex\"", path));
}

std::unique_ptr<Normalizer> parse_normalizer(const json& j, const std::string& path,
                                             const JsonCtx& ctx) {
  if (j.is_null()) return nullptr;
  const std::string type = ctx.type(j, path);
  if (type == "Sequence") {
    auto seq = std::make_unique<SequenceNormalizer>();
    const json& list = ctx.require(j, "normalizers", path);
    if (!list.is_array()) ctx.error(fmt::format("'{}.normalizers' must be an array", path));
    for (size_t i = 0; i < list.size(); ++i) {
      auto step = parse_normalizer(list[i], fmt::format("{}.normalizers[{}]", path, i), ctx);
      if (step) seq->steps.push_back(std::move(step));
    }
    return seq;
  }
  if (type == "Prepend") {
    auto n = std::make_unique<PrependNormalizer>();
    n->prefix = ctx.str(j, "prepend", path);
    return n;
  }
  if (type == "Replace") {
    return std::make_unique<ReplaceNormalizer>(
        parse_pattern(ctx.require(j, "pattern", path), path + ".pattern", ctx),
        ctx.str(j, "content", path));
  }
  if (type == "Lowercase") return std::make_unique<LowercaseNormalizer>();
  if (type == "Strip") {
    auto n = std::make_unique<StripNormalizer>();
    n->left = ctx.boolean(j, "strip_left", path, false);
    n->right = ctx.boolean(j, "strip_right", path, false);
    return n;
  }
  if (type == "NFC") return std::make_unique<UnicodeFormNormalizer>(NormalForm::NFC);
  if (type == "NFD") return std::make_unique<UnicodeFormNormalizer>(NormalForm::NFD);
  if (type == "NFKC") return std::make_unique<UnicodeFormNormalizer>(NormalForm::NFKC);
  if (type == "NFKD") return std::make_unique<UnicodeFormNormalizer>(NormalForm::NFKD);
  ctx.error(fmt::format("unsupported normalizer type '{}' at '{}'", type, path));
}

}  // namespace sy
