// PCRE2 (UTF + UCP, JIT-compiled) wrapper for tokenizer.json patterns, which Hugging Face
// writes for Oniguruma; the few syntax differences that matter (\uHHHH) are rewritten.
#pragma once

#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sy {

class Regex {
 public:
  // `where` names the file and field for the error message when the pattern is invalid.
  Regex(const std::string& pattern, const std::string& where);
  // A literal string pattern (tokenizer.json {"String": ...}).
  static Regex literal(const std::string& text, const std::string& where);

  // Non-overlapping matches left to right as [begin, end) byte offsets; after an empty
  // match the search resumes one code point later (Oniguruma's find_iter).
  std::vector<std::pair<size_t, size_t>> find_all(std::string_view text) const;

  // Replaces every match with `content`.
  std::string replace_all(std::string_view text, std::string_view content) const;

 private:
  struct Code;
  std::shared_ptr<const Code> code_;
};

}  // namespace sy
