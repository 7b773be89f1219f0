// The two error policies of Switchyard (DESIGN.md "One error policy per boundary"):
//  - sy::Error: bad input at a public boundary (files, flags, prompts). The message names
//    what is wrong and where, so a user can act on it. Callers catch it in main().
//  - SY_ASSERT: an internal invariant. Failing means a bug; prints file:line and aborts.
#pragma once

#include <fmt/format.h>

#include <stdexcept>
#include <string>

namespace sy {

class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error(message) {}
};

// Throws sy::Error with a fmt-formatted message.
template <typename... Args>
[[noreturn]] void fail(fmt::format_string<Args...> format, Args&&... args) {
  throw Error(fmt::format(format, std::forward<Args>(args)...));
}

[[noreturn]] void assert_failed(const char* expr, const char* file, int line, const char* message);

}  // namespace sy

#define SY_ASSERT(cond)                                                   \
  do {                                                                    \
    if (!(cond)) ::sy::assert_failed(#cond, __FILE__, __LINE__, nullptr); \
  } while (0)

#define SY_ASSERT_MSG(cond, msg)                                      \
  do {                                                                \
    if (!(cond)) ::sy::assert_failed(#cond, __FILE__, __LINE__, msg); \
  } while (0)
