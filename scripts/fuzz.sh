#!/usr/bin/env bash
# Coverage-guided fuzzing of every parser of an untrusted file (fuzz/targets/), with libFuzzer
# under ASan + UBSan, for a time budget; reports executions, coverage and findings per target.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [--report FILE] [--ledger FILE] [TARGET...]
#   scripts/fuzz.sh --summary [--ledger FILE]   totals per target over every run in the ledger
#
# --seconds N   time per target (default 60); --jobs J targets at once (default: cores)
# --report FILE also write the table as Markdown (with the cumulative totals of the ledger)
# TARGETs default to all of them. The corpus of each target grows across runs in
# build-fuzz/corpus/<target> (seeded by the target's --seeds: the checkpoints make-tiny writes,
# plus the transformers-written configs of ../shared/fixtures/hf5 when present); findings land
# in build-fuzz/findings/<target>/. Every run is appended to the ledger (build-fuzz/ledger.tsv, or
# --ledger fuzz/ledger.tsv: the committed record of long campaigns, summed across machines and
# sessions toward each target's executions). Exit status 1
# when anything was found: copy the input into fuzz/regressions/<target>/ once it is fixed.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
build="${FUZZ_BUILD_DIR:-$root/build-fuzz}"
seconds=60
jobs=$(nproc)
report=""
summary=0
ledger="$build/ledger.tsv"
targets=()
all_targets=(safetensors safetensors_index config tokenizer routing_trace checkpoint model gguf)
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --report) report="$2"; shift 2 ;;
    --summary) summary=1; shift ;;
    --ledger) ledger="$2"; shift 2 ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fuzz.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    *)
      if [[ ! " ${all_targets[*]} " == *" $1 "* ]]; then
        echo "fuzz.sh: unknown target '$1' (targets: ${all_targets[*]})" >&2; exit 2
      fi
      targets+=("$1"); shift ;;
  esac
done
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")
if [ "$summary" = 1 ]; then  # Markdown: one row per target, summed over the ledger's runs
  [ -f "$ledger" ] || { echo "fuzz.sh: no ledger at $ledger yet" >&2; exit 1; }
  echo "| target | runs | executions | wall time | exec/s | edges (max) | features (max) | findings |"
  echo "|---|---:|---:|---:|---:|---:|---:|---:|"
  for t in "${targets[@]}"; do
    awk -F'\t' -v t="$t" '$2 == t { n++; e += $3; w += $4; if ($5 > c) c = $5; if ($6 > f) f = $6;
        if ($8 > x) x = $8 }
      END { if (n) printf "| %s | %d | %d | %dh %02dm | %d | %d | %d | %d |\n", t, n, e,
            w / 3600, (w % 3600) / 60, e / (w ? w : 1), c, f, x }' "$ledger"
  done
  exit 0
fi
[[ "$seconds" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --seconds must be a positive integer" >&2; exit 2; }
[[ "$jobs" =~ ^[1-9][0-9]*$ ]] || { echo "fuzz.sh: --jobs must be a positive integer" >&2; exit 2; }

"$root/scripts/install-deps.sh"
generator=()
command -v ninja >/dev/null 2>&1 && generator=(-G Ninja)
# A build folder already configured with SY_FUZZ (CI's sanitizer build, which also holds the
# tests) is used as it is.
if ! grep -q '^SY_FUZZ:BOOL=ON' "$build/CMakeCache.txt" 2>/dev/null; then
  CC=clang CXX=clang++ cmake -S "$root" -B "$build" "${generator[@]}" -DSY_FUZZ=ON \
    -DSY_BUILD_TESTS=OFF -DSY_BUILD_BENCH=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo \
    -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -g" >/dev/null
fi
build_targets=()
for t in "${targets[@]}"; do build_targets+=("fuzz_$t" "replay_$t"); done
cmake --build "$build" -j "$(nproc)" --target "${build_targets[@]}"

dict_parts() {  # the dictionaries (fuzz/dict/) each target uses
  case "$1" in
    safetensors|safetensors_index) echo "json safetensors_keys" ;;
    config) echo "json config_keys" ;;
    tokenizer) echo "json tokenizer_keys" ;;
    routing_trace) echo "json safetensors_keys routing_trace_keys" ;;
    checkpoint) echo "json safetensors_keys checkpoint_keys config_keys" ;;
    model) echo "json safetensors_keys config_keys model_keys" ;;
    gguf) echo "gguf_keys" ;;
  esac
}

export ASAN_OPTIONS="detect_leaks=1:allocator_may_return_null=0:abort_on_error=0"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1"
run_target() {
  local t="$1" corpus="$build/corpus/$1" findings="$build/findings/$1"
  mkdir -p "$corpus" "$findings" "$build/logs"
  if [ -z "$(ls -A "$corpus")" ]; then
    "$build/fuzz/replay_$t" --seeds "$corpus" >/dev/null
    if [ "$t" = config ] && [ -d "$root/../shared/fixtures/hf5" ]; then
      for f in "$root"/../shared/fixtures/hf5/*/config.json; do
        cp "$f" "$corpus/hf5-$(basename "$(dirname "$f")").json"
      done
    fi
  fi
  local log="$build/logs/$t.$$"  # per run: campaigns of one target may run side by side
  local dict="$log.dict"
  for p in $(dict_parts "$t"); do cat "$root/fuzz/dict/$p.dict"; done >"$dict"
  local start=$(date +%s)
  set +e
  "$build/fuzz/fuzz_$t" "$corpus" -dict="$dict" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=2560 -malloc_limit_mb=2048 -close_fd_mask=3 -print_final_stats=1 \
    -artifact_prefix="$findings/" -reload=0 >"$log.log" 2>&1
  local rc=$?
  set -e
  local wall=$(( $(date +%s) - start ))
  local execs cov ft corp found
  # -a: a log that quotes a mutant holds binary bytes, and grep would only say "matches".
  # Without the final statistics (a killed run), the last progress line's count.
  execs=$(grep -ao 'stat::number_of_executed_units: [0-9]*' "$log.log" | tail -1 | awk '{print $2}')
  [ -n "$execs" ] || execs=$(grep -aoE '^#[0-9]+' "$log.log" | tail -1 | tr -d '#')
  cov=$(grep -aoE 'cov: [0-9]+' "$log.log" | tail -1 | awk '{print $2}')
  ft=$(grep -aoE 'ft: [0-9]+' "$log.log" | tail -1 | awk '{print $2}')
  corp=$(ls "$corpus" | wc -l)
  found=$(ls "$findings" | wc -l)
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$t" "${execs:-0}" "$wall" \
    "${cov:-0}" "${ft:-0}" "$corp" "$found" "$rc" >"$log.result"
}

echo "fuzzing ${targets[*]} for ${seconds} s each, ${jobs} at a time (logs: $build/logs/)"
running=0
for t in "${targets[@]}"; do
  run_target "$t" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n || true; running=$((running - 1)); fi
done
wait

mkdir -p "$(dirname "$ledger")"
[ -f "$ledger" ] || printf 'date\ttarget\texecutions\twall_s\tedges\tfeatures\tcorpus\tfindings\trc\n' >"$ledger"
status=0
table="| target | executions | exec/s | edges | features | corpus | findings | all runs: executions |"$'\n'
table+="|---|---:|---:|---:|---:|---:|---:|---:|"$'\n'
printf '\n%-18s %12s %8s %7s %9s %7s %9s %14s\n' target executions exec/s edges features corpus findings "all runs"
for t in "${targets[@]}"; do
  IFS=$'\t' read -r _ _ execs wall cov ft corp found rc <"$build/logs/$t.$$.result"
  cat "$build/logs/$t.$$.result" >>"$ledger"
  total=$(awk -F'\t' -v t="$t" '$2 == t { s += $3 } END { print s + 0 }' "$ledger")
  rate=$(( execs / (wall > 0 ? wall : 1) ))
  printf '%-18s %12s %8s %7s %9s %7s %9s %14s\n' "$t" "$execs" "$rate" "$cov" "$ft" "$corp" "$found" "$total"
  table+="| $t | $execs | $rate | $cov | $ft | $corp | $found | $total |"$'\n'
  if [ "$found" != 0 ] || [ "$rc" != 0 ]; then
    status=1
    echo "  FINDINGS for $t: $(ls "$build/findings/$t" | head -5 | tr '\n' ' ') (log: $build/logs/$t.$$.log)"
  fi
done
if [ -n "$report" ]; then
  {
    echo "# Fuzzing report"
    echo
    echo "$(date -u +%F), scripts/fuzz.sh --seconds $seconds --jobs $jobs on $(nproc) cores;"
    echo "libFuzzer (clang $(clang --version | head -1 | grep -oE '[0-9]+\.[0-9]+\.[0-9]+')) under ASan + UBSan."
    echo "Edges: instrumented edges covered (libFuzzer's cov); all runs: executions summed over the ledger."
    echo
    echo "$table"
  } >"$report"
  echo "report: $report"
fi
exit $status
