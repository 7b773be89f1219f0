// Unicode normalization forms and full lowercase mapping for the tokenizer's normalizers,
// backed by ICU (the tables of the installed libicu, Unicode 15 for ICU 72).
#pragma once

#include <string>
#include <string_view>

namespace sy {

enum class NormalForm { NFC, NFD, NFKC, NFKD };

// `text` must be valid UTF-8 (the tokenizer validates its input before normalizing).
std::string unicode_normalize(std::string_view text, NormalForm form);

// Full lowercase mapping (SpecialCasing.txt included, root locale) of each code point on its
// own, as HF's NormalizedString::lowercase does with Rust's char::to_lowercase: "İ" becomes
// "i̇" (two code points), and "Σ" always becomes "σ" (no word-final "ς": that rule needs
// context, which a per-character mapping does not have).
std::string unicode_lowercase(std::string_view text);

}  // namespace sy
