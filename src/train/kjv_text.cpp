#include "train/kjv_text.h"

#include <algorithm>
#include <array>
#include <cctype>
#include <cstdint>
#include <iterator>
#include <string_view>

#include "io/file_util.h"
#include "util/error.h"

namespace sy::train {
namespace {

// The BRS header, as bible-kjv-text 4.x writes it (all integers big-endian):
// "EC02", an 80-byte description, u32 block size, u32 number of blocks, then num_blocks + 1
// u32 file offsets. A 3-byte compress(1) header (1f 9d flags) sits just before offsets[0]; each
// block's LZW codes run from offsets[i] to offsets[i + 1] with a fresh table.
constexpr size_t kBlockSizeAt = 84, kNumBlocksAt = 88, kOffsetsAt = 92;

uint32_t be32(const std::string& d, size_t at) {
  const auto* p = reinterpret_cast<const unsigned char*>(d.data() + at);
  return uint32_t(p[0]) << 24 | uint32_t(p[1]) << 16 | uint32_t(p[2]) << 8 | p[3];
}

// Decodes one compress(1) code stream in block mode: codes of 9..max_bits bits, LSB first; code
// 256 clears the table. A width change or a clear skips to the end of the current group of 8
// codes, because compress(1) writes codes in groups of n_bits bytes. Mirrors gzip's unlzw.
// Appends to `out`, failing once it would grow past max_out bytes (a corrupt stream).
void lzw_decode(const unsigned char* data, size_t size, int max_bits, size_t max_out,
                std::string& out) {
  constexpr uint32_t kClear = 256, kFirst = 257;
  const uint32_t table_size = 1u << max_bits;
  std::vector<uint32_t> prefix(table_size, 0);
  std::vector<unsigned char> suffix(table_size, 0), stack;
  for (uint32_t c = 0; c < 256; ++c) suffix[c] = static_cast<unsigned char>(c);

  int n_bits = 9;
  uint32_t max_code = (1u << n_bits) - 1, free_ent = kFirst;
  const uint64_t total_bits = uint64_t(size) * 8;
  uint64_t pos = 0, group_origin = 0;  // bit offsets; groups of 8 codes start at group_origin
  auto skip_to_group_end = [&] {
    const uint64_t g = 8 * uint64_t(n_bits);
    pos = group_origin + (pos - group_origin + g - 1) / g * g;
    group_origin = pos;
  };
  int64_t old = -1;
  unsigned char first_char = 0;
  while (true) {
    if (free_ent > max_code && n_bits < max_bits) {
      skip_to_group_end();
      ++n_bits;
      max_code = (1u << n_bits) - 1;
    }
    if (pos + n_bits > total_bits) break;
    uint32_t v = 0;
    for (size_t i = 0, byte = pos >> 3; i < 3 && byte + i < size; ++i)
      v |= uint32_t(data[byte + i]) << (8 * i);
    uint32_t code = (v >> (pos & 7)) & ((1u << n_bits) - 1);
    pos += n_bits;

    if (old < 0) {  // the first code is a literal byte
      if (code >= 256) fail("bible-kjv: corrupt LZW stream (first code {})", code);
      first_char = static_cast<unsigned char>(code);
      out.push_back(static_cast<char>(first_char));
      old = code;
      continue;
    }
    if (code == kClear) {
      skip_to_group_end();
      n_bits = 9;
      max_code = (1u << n_bits) - 1;
      free_ent = kFirst - 1;  // the next code adds a dummy entry 256, as the encoder expects
      continue;
    }
    const uint32_t in_code = code;
    stack.clear();
    if (code >= free_ent) {  // the "KwKwK" case: the entry being defined by this very code
      if (code > free_ent)
        fail("bible-kjv: corrupt LZW stream (code {} beyond table {})", code, free_ent);
      stack.push_back(first_char);
      code = static_cast<uint32_t>(old);
    }
    while (code >= 256) {
      if (stack.size() >= table_size) fail("bible-kjv: corrupt LZW stream (cyclic table)");
      stack.push_back(suffix[code]);
      code = prefix[code];
    }
    first_char = suffix[code];
    stack.push_back(first_char);
    out.append(stack.rbegin(), stack.rend());
    if (out.size() > max_out) fail("bible-kjv: corrupt LZW stream (a block decodes too long)");
    if (free_ent < table_size) {
      prefix[free_ent] = static_cast<uint32_t>(old);
      suffix[free_ent] = first_char;
      ++free_ent;
    }
    old = in_code;
  }
}

// Canonical book names, in the order the data file lists its 66 books.
// clang-format off
constexpr std::array<const char*, 66> kBooks = {
    "Genesis", "Exodus", "Leviticus", "Numbers", "Deuteronomy", "Joshua", "Judges", "Ruth",
    "1 Samuel", "2 Samuel", "1 Kings", "2 Kings", "1 Chronicles", "2 Chronicles", "Ezra",
    "Nehemiah", "Esther", "Job", "Psalms", "Proverbs", "Ecclesiastes", "Song of Solomon",
    "Isaiah", "Jeremiah", "Lamentations", "Ezekiel", "Daniel", "Hosea", "Joel", "Amos",
    "Obadiah", "Jonah", "Micah", "Nahum", "Habakkuk", "Zephaniah", "Haggai", "Zechariah",
    "Malachi", "Matthew", "Mark", "Luke", "John", "Acts", "Romans", "1 Corinthians",
    "2 Corinthians", "Galatians", "Ephesians", "Philippians", "Colossians", "1 Thessalonians",
    "2 Thessalonians", "1 Timothy", "2 Timothy", "Titus", "Philemon", "Hebrews", "James",
    "1 Peter", "2 Peter", "1 John", "2 John", "3 John", "Jude", "Revelation"};
// clang-format on

struct Verse {
  std::string book;  // the file's abbreviation, e.g. "1Sm"
  int chapter = 0, verse = 0;
  std::string_view text;
};

// Parses "1Sm3:10 And the LORD came ..."; false when the line is not a verse.
bool parse_verse(std::string_view line, Verse& v) {
  size_t i = 0;
  if (i < line.size() && line[i] >= '1' && line[i] <= '3') ++i;
  const size_t letters = i;
  while (i < line.size() && std::isalpha(static_cast<unsigned char>(line[i]))) ++i;
  if (i == letters) return false;
  v.book.assign(line.substr(0, i));
  auto number = [&](int& n) {
    const size_t start = i;
    n = 0;
    while (i < line.size() && std::isdigit(static_cast<unsigned char>(line[i])))
      n = n * 10 + (line[i++] - '0');
    return i > start && i - start < 5;
  };
  if (!number(v.chapter) || i >= line.size() || line[i++] != ':' || !number(v.verse)) return false;
  if (i >= line.size() || line[i++] != ' ') return false;
  v.text = line.substr(i);
  while (!v.text.empty() && v.text.back() == ' ') v.text.remove_suffix(1);
  return true;
}

}  // namespace

std::string read_brs_text(const std::string& path) {
  if (!io::file_exists(path)) {
    fail("bible-kjv: '{}' not found; install bible-kjv-text (scripts/install-deps.sh)", path);
  }
  const std::string d = io::read_text_file(path);
  if (d.size() < kOffsetsAt || d.compare(0, 4, "EC02") != 0)
    fail("bible-kjv: '{}' is not a BRS data file (no EC02 magic)", path);
  const uint32_t block_size = be32(d, kBlockSizeAt), num_blocks = be32(d, kNumBlocksAt);
  if (num_blocks == 0 || num_blocks > 100000 || block_size == 0 || block_size > (1u << 24) ||
      kOffsetsAt + 4 * (size_t(num_blocks) + 1) > d.size()) {
    fail("bible-kjv: '{}' has a bad block table ({} blocks)", path, num_blocks);
  }
  std::vector<uint32_t> offsets(num_blocks + 1);
  for (size_t i = 0; i <= num_blocks; ++i) offsets[i] = be32(d, kOffsetsAt + 4 * i);
  if (!std::is_sorted(offsets.begin(), offsets.end()) || offsets.back() != d.size()) {
    fail("bible-kjv: '{}' has a bad block table (offsets out of order or past the end)", path);
  }
  const size_t z = offsets[0] - 3;  // the compress(1) header
  if (offsets[0] < kOffsetsAt + 4 * offsets.size() + 3 || uint8_t(d[z]) != 0x1f ||
      uint8_t(d[z + 1]) != 0x9d) {
    fail("bible-kjv: '{}' has no compress(1) stream where its block table says", path);
  }
  const int flags = uint8_t(d[z + 2]), max_bits = flags & 0x1f;
  if (!(flags & 0x80) || max_bits < 9 || max_bits > 16)
    fail("bible-kjv: unsupported compress(1) flags {:#x}", flags);

  std::string text;
  text.reserve(std::min(size_t(block_size) * num_blocks, size_t(1) << 28));
  const auto* bytes = reinterpret_cast<const unsigned char*>(d.data());
  for (size_t b = 0; b < num_blocks; ++b) {
    const size_t before = text.size();
    lzw_decode(bytes + offsets[b], offsets[b + 1] - offsets[b], max_bits, before + block_size,
               text);
    const size_t got = text.size() - before;
    if (got > block_size || (b + 1 < num_blocks && got != block_size)) {
      fail("bible-kjv: '{}': block {} decodes to {} bytes, expected {}", path, b, got, block_size);
    }
  }
  return text;
}

std::vector<std::string> load_kjv_chapters(const std::string& path) {
  const std::string text = read_brs_text(path);
  std::vector<std::string> chapters;
  size_t book_index = 0;
  Verse prev, v;
  size_t num_verses = 0;
  for (size_t begin = 0; begin < text.size();) {
    size_t end = text.find('\n', begin);
    if (end == std::string::npos) end = text.size();
    const std::string_view line(text.data() + begin, end - begin);
    begin = end + 1;
    if (!parse_verse(line, v)) {
      if (num_verses == 0) continue;  // the title line
      fail("bible-kjv: '{}': unexpected line after verse {}: '{:.60}'", path, num_verses, line);
    }
    const bool new_book = v.book != prev.book, new_chapter = new_book || v.chapter != prev.chapter;
    if (new_book && num_verses > 0) ++book_index;
    const int want_chapter = new_book ? 1 : prev.chapter + (new_chapter ? 1 : 0);
    const int want_verse = new_chapter ? 1 : prev.verse + 1;
    if (book_index >= kBooks.size() || v.chapter != want_chapter || v.verse != want_verse) {
      fail("bible-kjv: '{}': verse {}{}:{} out of order", path, v.book, v.chapter, v.verse);
    }
    if (new_chapter) chapters.push_back(fmt::format("{} {}\n", kBooks[book_index], v.chapter));
    fmt::format_to(std::back_inserter(chapters.back()), "{} {}\n", v.verse, v.text);
    prev.book = v.book;
    prev.chapter = v.chapter;
    prev.verse = v.verse;
    ++num_verses;
  }
  if (book_index + 1 != kBooks.size())
    fail("bible-kjv: '{}' has {} books, expected 66", path, book_index + 1);
  return chapters;
}

}  // namespace sy::train
