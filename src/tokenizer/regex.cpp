// PCRE2 wrapper: see regex.h.
#define PCRE2_CODE_UNIT_WIDTH 8
#include "tokenizer/regex.h"

#include <pcre2.h>

#include <cctype>

#include "tokenizer/utf8.h"
#include "util/error.h"

namespace sy {

struct Regex::Code {
  pcre2_code* code = nullptr;
  ~Code() { pcre2_code_free(code); }
};

namespace {

// Oniguruma accepts \uHHHH, PCRE2 wants \x{HHHH}; everything else used by HF patterns
// (\p{..}, (?i:..), lookahead, possessive/atomic forms) means the same in both.
std::string rewrite_oniguruma(const std::string& pattern) {
  std::string out;
  for (size_t i = 0; i < pattern.size(); ++i) {
    if (pattern[i] == '\\' && i + 1 < pattern.size()) {
      if (pattern[i + 1] == 'u' && i + 6 <= pattern.size()) {
        const std::string hex = pattern.substr(i + 2, 4);
        if (hex.size() == 4 &&
            hex.find_first_not_of("0123456789abcdefABCDEF") == std::string::npos) {
          out += "\\x{" + hex + "}";
          i += 5;
          continue;
        }
      }
      out += pattern[i];
      out += pattern[i + 1];
      ++i;
      continue;
    }
    out += pattern[i];
  }
  return out;
}

std::string escape_literal(const std::string& text) {
  return "\\Q" + text + "\\E";  // \E inside text cannot occur in practice; checked below
}

// A JIT stack per thread: long whitespace runs can exceed PCRE2's 32 KiB default.
pcre2_match_context* thread_match_context() {
  struct Ctx {
    pcre2_jit_stack* stack = pcre2_jit_stack_create(32 * 1024, 4 * 1024 * 1024, nullptr);
    pcre2_match_context* mctx = pcre2_match_context_create(nullptr);
    Ctx() { pcre2_jit_stack_assign(mctx, nullptr, stack); }
    ~Ctx() {
      pcre2_match_context_free(mctx);
      pcre2_jit_stack_free(stack);
    }
  };
  thread_local Ctx ctx;
  return ctx.mctx;
}

}  // namespace

Regex::Regex(const std::string& pattern, const std::string& where) {
  const std::string translated = rewrite_oniguruma(pattern);
  int error_code = 0;
  PCRE2_SIZE error_offset = 0;
  pcre2_code* code =
      pcre2_compile(reinterpret_cast<PCRE2_SPTR>(translated.data()), translated.size(),
                    PCRE2_UTF | PCRE2_UCP, &error_code, &error_offset, nullptr);
  if (code == nullptr) {
    PCRE2_UCHAR message[256];
    pcre2_get_error_message(error_code, message, sizeof(message));
    fail("{}: invalid regex '{}' at offset {}: {}", where, pattern, error_offset,
         reinterpret_cast<const char*>(message));
  }
  pcre2_jit_compile(code,
                    PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  auto c = std::make_shared<Code>();
  c->code = code;
  code_ = std::move(c);
}

Regex Regex::literal(const std::string& text, const std::string& where) {
  if (text.find("\\E") != std::string::npos) {
    std::string escaped;
    for (char ch : text) {
      if (!std::isalnum(static_cast<unsigned char>(ch)) && static_cast<unsigned char>(ch) < 0x80)
        escaped += '\\';
      escaped += ch;
    }
    return Regex(escaped, where);
  }
  return Regex(escape_literal(text), where);
}

std::vector<std::pair<size_t, size_t>> Regex::find_all(std::string_view text) const {
  std::vector<std::pair<size_t, size_t>> matches;
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(code_->code, nullptr);
  pcre2_match_context* mctx = thread_match_context();
  size_t pos = 0;
  while (pos <= text.size()) {
    // Callers validate UTF-8 once at the boundary, so PCRE2 need not re-check each call.
    const int rc = pcre2_match(code_->code, reinterpret_cast<PCRE2_SPTR>(text.data()), text.size(),
                               pos, PCRE2_NO_UTF_CHECK, md, mctx);
    if (rc == PCRE2_ERROR_NOMATCH) break;
    if (rc < 0) {
      pcre2_match_data_free(md);
      PCRE2_UCHAR message[256];
      pcre2_get_error_message(rc, message, sizeof(message));
      fail("tokenizer: regex match failed: {}", reinterpret_cast<const char*>(message));
    }
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t begin = ov[0], end = ov[1];
    matches.emplace_back(begin, end);
    if (end > begin) {
      pos = end;
    } else {
      if (end >= text.size()) break;
      pos = end + utf8::sequence_length(static_cast<unsigned char>(text[end]));
    }
  }
  pcre2_match_data_free(md);
  return matches;
}

std::string Regex::replace_all(std::string_view text, std::string_view content) const {
  std::string out;
  size_t prev = 0;
  for (auto [begin, end] : find_all(text)) {
    out.append(text.substr(prev, begin - prev));
    out.append(content);
    prev = end;
  }
  out.append(text.substr(prev));
  return out;
}

}  // namespace sy
