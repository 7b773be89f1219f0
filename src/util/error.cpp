#include "util/error.h"

#include <cstdio>
#include <cstdlib>

namespace sy {

void assert_failed(const char* expr, const char* file, int line, const char* message) {
  std::fprintf(stderr, "switchyard: internal error at %s:%d: assertion '%s' failed%s%s\n", file,
               line, expr, message ? ": " : "", message ? message : "");
  std::abort();
}

}  // namespace sy
