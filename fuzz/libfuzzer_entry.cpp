// libFuzzer's entry point for a target (SY_FUZZ builds): a sy::Error is a clean refusal;
// everything else reaches libFuzzer as a crash.
#include <cstddef>
#include <cstdint>

#include "target.h"
#include "util/error.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  try {
    sy::fuzz::run_one(std::string_view(reinterpret_cast<const char*>(data), size));
  } catch (const sy::Error&) {
  }
  return 0;
}
