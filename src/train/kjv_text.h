// The King James Bible from the Debian package bible-kjv-text, read without its reader program:
// /usr/lib/bible.data is Chip Chapin's "Bible Retrieval System" file, a table of 64 KiB blocks
// each compressed as an independent Unix compress(1) (LZW) code stream.
#pragma once

#include <string>
#include <vector>

namespace sy::train {

inline constexpr const char* kKjvDataPath = "/usr/lib/bible.data";

// The decompressed text: a title line, then one line per verse, "Ge1:1 In the beginning ...".
// Throws sy::Error when the file is missing (naming the package to install) or malformed.
std::string read_brs_text(const std::string& path = kKjvDataPath);

// The 1189 chapters in canonical order, each "Genesis 1\n1 In the beginning ...\n2 ...\n".
std::vector<std::string> load_kjv_chapters(const std::string& path = kKjvDataPath);

}  // namespace sy::train
