// UTF-8 helpers shared by the tokenizer: code point iteration, validation, lossy decoding
// (as Rust's String::from_utf8_lossy does it) and GPT-2's byte <-> printable-char table.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <string_view>

namespace sy::utf8 {

// Length in bytes of the (valid) sequence starting with lead byte `lead`; 1 for stray bytes.
size_t sequence_length(unsigned char lead);

// Byte offset of the first invalid sequence, or npos when `text` is valid UTF-8.
size_t find_invalid(std::string_view text);

// Decodes the code point at text[pos] (text must be valid there) and advances pos.
char32_t next(std::string_view text, size_t& pos);

void append(std::string& out, char32_t cp);
std::string encode(char32_t cp);

// Replaces each maximal invalid subpart with U+FFFD (Unicode's recommended practice,
// matching Rust's from_utf8_lossy and the WHATWG TextDecoder).
std::string lossy(std::string_view bytes);

// True when `text` ends inside an incomplete (but so far valid) multi-byte sequence.
bool ends_with_partial_sequence(std::string_view text);

// GPT-2 byte-level alphabet: each byte maps to one printable code point.
const std::array<char32_t, 256>& byte_to_char();
// Inverse of byte_to_char(); -1 for code points that are not in the alphabet.
int char_to_byte(char32_t cp);

}  // namespace sy::utf8
