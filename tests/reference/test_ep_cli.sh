#!/usr/bin/env bash
# The switchyard commands under mpirun give what one process gives: `score` spreads batches of
# windows over the ranks and sums them back (logits, perplexity, expert loads), `generate` keeps
# the sequence on rank 0 while the experts serve from every rank (greedy text identical), and
# `bench` runs and reports each rank. Dropless, so batching cannot change any routing decision.
# Usage: test_ep_cli.sh SWITCHYARD_BINARY WORK_DIR
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work" && mkdir -p "$work"
command -v mpirun >/dev/null || { echo "SKIP: mpirun not found"; exit 77; }
[ -x /usr/bin/python3 ] && /usr/bin/python3 -c "import numpy" 2>/dev/null || { echo "SKIP: numpy missing"; exit 77; }
export SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1
# Leak checks off for MPI ranks under AddressSanitizer (Open MPI's components keep memory to exit).
mpi=(timeout 300 env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root)
failures=0
fail() { echo "FAIL $*"; failures=$((failures+1)); }

"$sy" make-tiny --family qwen3_moe --out "$work/model" --experts 6 --top-k 2 --layers 2 >/dev/null || exit 1
text="$work/text.txt"
for i in $(seq 1 12); do echo "Line $i: the quick brown fox jumps over the lazy dog, and expert parallelism moves rows." ; done >"$text"

"$sy" score -m "$work/model" -f "$text" --window 32 --batch 2 -q --dump-logits "$work/one.npy" \
  --load-json "$work/one_load.json" >"$work/one.out" 2>&1 || { fail "single-process score"; cat "$work/one.out"; }
for ranks in 2 3; do
  "${mpi[@]}" -np $ranks "$sy" score -m "$work/model" -f "$text" --window 32 --batch 2 -q \
    --dump-logits "$work/ep$ranks.npy" --load-json "$work/ep${ranks}_load.json" --ep-json "$work/ep$ranks.json" \
    >"$work/ep$ranks.out" 2>&1 || { fail "score under mpirun -np $ranks"; cat "$work/ep$ranks.out"; continue; }
  /usr/bin/python3 "$here/compare_npy.py" "$work/ep$ranks.npy" "$work/one.npy" --dtype f32 --model "$work/model" \
    --label "score logits, $ranks ranks vs one process" || fail "logits differ with $ranks ranks"
  /usr/bin/python3 "$here/ep_cli_checks.py" loads "$work/one_load.json" "$work/ep${ranks}_load.json" "$work/ep$ranks.json" "$ranks" \
    || fail "loads or rank report with $ranks ranks"
  p1=$(grep -o "perplexity [0-9.]*" "$work/one.out"); p2=$(grep -o "perplexity [0-9.]*" "$work/ep$ranks.out")
  echo "one process: $p1; $ranks ranks: $p2"
done

"$sy" generate -m "$work/model" -p "The quick brown" -n 12 >"$work/gen1.out" 2>/dev/null || fail "generate"
"${mpi[@]}" -np 2 "$sy" generate -m "$work/model" -p "The quick brown" -n 12 >"$work/gen2.out" 2>"$work/gen2.err" \
  || { fail "generate under mpirun"; cat "$work/gen2.err"; }
cmp -s "$work/gen1.out" "$work/gen2.out" && echo "greedy text identical with 2 ranks" \
  || { fail "greedy text differs"; diff "$work/gen1.out" "$work/gen2.out"; }

"${mpi[@]}" -np 2 "$sy" bench -m "$work/model" --prompt 16 --decode 4 --reps 1 >"$work/bench.out" 2>&1 \
  || { fail "bench under mpirun"; cat "$work/bench.out"; }
grep -q "2 rank(s)" "$work/bench.out" && grep -q "decode" "$work/bench.out" || fail "bench report incomplete"

[ $failures -eq 0 ] && echo "all mpirun command checks passed" || { echo "$failures checks FAILED"; exit 1; }
