// NFC/NFD/NFKC/NFKD through icu::Normalizer2 (UTF-8 in and out, no UTF-16 round trip for
// the composing forms) and per-code-point full lowercase through u_strToLower.
#include "tokenizer/unicode_normalize.h"

#include <unicode/bytestream.h>
#include <unicode/normalizer2.h>
#include <unicode/uchar.h>
#include <unicode/ustring.h>
#include <unicode/utf16.h>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace sy {
namespace {

bool is_ascii(std::string_view text) {
  for (char c : text) {
    if (static_cast<unsigned char>(c) >= 0x80) return false;
  }
  return true;
}

const icu::Normalizer2& normalizer_for(NormalForm form) {
  UErrorCode status = U_ZERO_ERROR;
  const icu::Normalizer2* n = nullptr;
  switch (form) {
    case NormalForm::NFC:
      n = icu::Normalizer2::getNFCInstance(status);
      break;
    case NormalForm::NFD:
      n = icu::Normalizer2::getNFDInstance(status);
      break;
    case NormalForm::NFKC:
      n = icu::Normalizer2::getNFKCInstance(status);
      break;
    case NormalForm::NFKD:
      n = icu::Normalizer2::getNFKDInstance(status);
      break;
  }
  if (U_FAILURE(status) || n == nullptr) {
    fail("tokenizer: ICU cannot load its Unicode normalization data ({})", u_errorName(status));
  }
  return *n;  // owned by ICU, valid for the life of the process
}

}  // namespace

std::string unicode_normalize(std::string_view text, NormalForm form) {
  if (is_ascii(text)) return std::string(text);  // ASCII is invariant under all four forms
  const icu::Normalizer2& n = normalizer_for(form);
  const icu::StringPiece src(text.data(), static_cast<int32_t>(text.size()));
  UErrorCode status = U_ZERO_ERROR;
  if (n.isNormalizedUTF8(src, status) && U_SUCCESS(status)) return std::string(text);
  status = U_ZERO_ERROR;
  std::string out;
  out.reserve(text.size() + text.size() / 4);
  icu::StringByteSink<std::string> sink(&out);
  n.normalizeUTF8(0, src, sink, nullptr, status);
  if (U_FAILURE(status)) fail("tokenizer: Unicode normalization failed ({})", u_errorName(status));
  return out;
}

std::string unicode_lowercase(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  size_t pos = 0;
  while (pos < text.size()) {
    const char32_t cp = utf8::next(text, pos);
    if (cp < 0x80) {
      out.push_back(static_cast<char>(cp >= 'A' && cp <= 'Z' ? cp + 32 : cp));
      continue;
    }
    if (!u_hasBinaryProperty(static_cast<UChar32>(cp), UCHAR_CHANGES_WHEN_LOWERCASED)) {
      utf8::append(out, cp);
      continue;
    }
    // One code point alone: the root locale's only conditional rule (Final_Sigma) cannot
    // fire, so this is exactly Rust's char::to_lowercase.
    UChar src[2];
    int32_t src_len = 0;
    U16_APPEND_UNSAFE(src, src_len, static_cast<UChar32>(cp));
    UChar dst[8];  // full lowercase mappings are at most 3 code points
    UErrorCode status = U_ZERO_ERROR;
    const int32_t dst_len = u_strToLower(dst, 8, src, src_len, "", &status);
    SY_ASSERT(U_SUCCESS(status) && dst_len <= 8);
    for (int32_t i = 0; i < dst_len;) {
      UChar32 c;
      U16_NEXT_UNSAFE(dst, i, c);
      utf8::append(out, static_cast<char32_t>(c));
    }
  }
  return out;
}

}  // namespace sy
