#!/usr/bin/env bash
# Side-by-side A/B of two builds on the headline benchmarks, in one run: inference shape A
# (BF16, 2 threads: prefill and decode tokens/s) and training T1 / T2 (2 threads, tokens/s).
# Rounds alternate A and B so drift in the machine's state hits both alike; the table gives
# each side's median and the ratio B / A of the medians.
# Usage: bench/ab_compare.sh DIR_A DIR_B [ROUNDS=3]   (each DIR holds bench_inference and
#        bench_train, e.g. build/bench of two checkouts)
set -euo pipefail
[ $# -ge 2 ] || { sed -n 2,7p "$0" >&2; exit 2; }
a="$1" b="$2" rounds="${3:-3}"
for d in "$a" "$b"; do
  for t in bench_inference bench_train; do
    [ -x "$d/$t" ] || { echo "ab_compare: no $t in $d" >&2; exit 2; }
  done
done
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

for r in $(seq 1 "$rounds"); do
  for side in A B; do
    dir=$a; [ $side = B ] && dir=$b
    echo "round $r/$rounds, build $side ($dir)" >&2
    "$dir/bench_inference" --shape A --threads 2 --reps 3 --decode 32 --json "$out/inf_${side}_$r.json" >/dev/null
    "$dir/bench_train" --config T1 --threads 2 --steps 8 --json "$out/t1_${side}_$r.json" >/dev/null
    "$dir/bench_train" --config T2 --threads 2 --steps 4 --warmup 1 --json "$out/t2_${side}_$r.json" >/dev/null
  done
done

/usr/bin/python3 - "$out" "$rounds" <<'PY'
import json, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
def val(kind, side, r, key):
    return json.load(open(f"{out}/{kind}_{side}_{r}.json"))["results"][0][key]
rows = [("inference A prefill t/s", "inf", "prefill_tokens_per_s"),
        ("inference A decode t/s", "inf", "decode_tokens_per_s"),
        ("training T1 tokens/s", "t1", "tokens_per_s"),
        ("training T2 tokens/s", "t2", "tokens_per_s")]
print(f"{'benchmark (2 threads)':26} {'A runs':>24} {'B runs':>24} {'A median':>9} {'B median':>9} {'B / A':>7}")
for name, kind, key in rows:
    A = [val(kind, "A", r, key) for r in range(1, rounds + 1)]
    B = [val(kind, "B", r, key) for r in range(1, rounds + 1)]
    ma, mb = statistics.median(A), statistics.median(B)
    fmt = lambda xs: "/".join(f"{x:.0f}" for x in xs)
    print(f"{name:26} {fmt(A):>24} {fmt(B):>24} {ma:9.1f} {mb:9.1f} {mb / ma:7.3f}")
PY
