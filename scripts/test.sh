#!/usr/bin/env bash
# Sets up, builds and runs the test suite in tiers: `fast` (unit tests and quick reference
# checks, under two minutes on 2 cores), then `slow` (training runs and external references).
# SY_TEST_TIER=fast runs the fast tier only. With SY_TEST_ASAN=1 (as CI does) the fast tier
# runs a second time under AddressSanitizer + UBSan in build-asan/. With SY_TEST_FUZZ=N (as CI
# does, N seconds per target) a short libFuzzer pass over every parser follows (scripts/fuzz.sh;
# the regression corpus itself is part of the fast tier). Ends with the time of every step.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
jobs=$(nproc)
tiers="${SY_TEST_TIER:-fast slow}"

timings=()
step_start=0
start_step() { step_start=$(date +%s); }
end_step() { timings+=("$(printf '%-34s %6d s' "$1" $(( $(date +%s) - step_start )))"); }
report() {
  local rc=$?
  echo
  echo "== timings =="
  for t in "${timings[@]}"; do echo "$t"; done
  exit $rc
}
trap report EXIT

run_tier() {  # run_tier BUILD_DIR LABEL [VAR=VALUE ...]
  local dir="$1" label="$2"
  shift 2
  (cd "$dir" && env "$@" ctest --output-on-failure -j "$jobs" -L "^${label}\$")
}

start_step
# SY_TEST_UNITY=1 (CI): a unity build, about a third less compile time on a clean clone; the
# incremental builds of a developer's build/ are faster without it.
unity=()
[ "${SY_TEST_UNITY:-0}" = "1" ] && unity=(-DCMAKE_UNITY_BUILD=ON)
"$root/scripts/build.sh" "${unity[@]}"
end_step "build (release)"
for tier in $tiers; do
  echo "== $tier tier =="
  start_step
  run_tier "$root/build" "$tier"
  end_step "tests: $tier tier (release)"
done

if [ "${SY_TEST_ASAN:-0}" = "1" ]; then
  echo "== the fast tier under AddressSanitizer + UBSan =="
  start_step
  # A unity build with line tables only (-g1: enough for the sanitizers' stack traces) halves
  # the build, the largest step of CI. It is clang's and also holds the fuzzers (SY_FUZZ: the
  # parsers carry libFuzzer's coverage, the kernels do not), so that the fuzz pass below needs
  # no third build; and CI compiles the code with a second compiler.
  CC=clang CXX=clang++ BUILD_DIR="$root/build-asan" "$root/scripts/build.sh" -DSY_ASAN=ON \
    -DSY_FUZZ=ON -DSY_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g1" -DCMAKE_UNITY_BUILD=ON
  end_step "build (asan + ubsan + fuzzers, clang)"
  start_step
  run_tier "$root/build-asan" fast ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 LSAN_OPTIONS="suppressions=$root/scripts/lsan.supp"
  end_step "tests: fast tier (asan + ubsan)"
fi

if [ "${SY_TEST_FUZZ:-0}" != "0" ]; then
  echo "== a short fuzz pass: every parser, ${SY_TEST_FUZZ} s each, under ASan + UBSan =="
  start_step
  fuzz_build="$root/build-fuzz"
  [ "${SY_TEST_ASAN:-0}" = "1" ] && fuzz_build="$root/build-asan"
  FUZZ_BUILD_DIR="$fuzz_build" "$root/scripts/fuzz.sh" --seconds "$SY_TEST_FUZZ"
  end_step "fuzz pass (${SY_TEST_FUZZ} s per target)"
fi
