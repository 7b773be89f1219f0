#!/usr/bin/env bash
# Sets up, builds and runs the whole test suite: unit tests, the PyTorch / Hugging Face
# reference comparisons and bad-input checks (CTest). With SY_TEST_ASAN=1 (as CI does) the
# suite runs a second time under AddressSanitizer + UBSan in build-asan/.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs=$(nproc)
"$root/scripts/build.sh"
(cd "$root/build" && ctest --output-on-failure -j "$jobs" --timeout 900)
if [ "${SY_TEST_ASAN:-0}" = "1" ]; then
  echo "== the same suite under AddressSanitizer + UBSan =="
  BUILD_DIR="$root/build-asan" "$root/scripts/build.sh" -DSY_ASAN=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo
  (cd "$root/build-asan" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
     UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
     ctest --output-on-failure -j "$jobs" --timeout 1800)
fi
