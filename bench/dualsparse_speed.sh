#!/usr/bin/env bash
# DualSparse-MoE's speed claims (papers.md section 6) measured in kind on this machine:
#  1. one process: MoE-layer time (prefill), prefill and decode tokens/s against the share of
#     expert computation dropped by 1T-Drop and 2T-Drop, with the dropless original and its
#     complete and partial partitions (half-width experts: any padding or per-expert overhead
#     shows up as a slowdown at zero drop);
#  2. expert parallelism with a skewed placement (device 0 holds 5 of the 8 experts' parts, so
#     it receives about 5/8 of the pairs): the slowest device's expert time with plain 1T and
#     with load-aware thresholds, MODELLED in one process (the busiest device's pairs, summed
#     over layers) and MEASURED under `mpirun -np 2` (each rank's expert compute seconds).
# The model is `make-tiny --reference-shape A` (Mixtral-like: hidden 1024, 8 experts of FFN
# 2816, top-2, 8 layers, BF16) with random weights: its router's top-2 shares are closer to
# even than a trained model's, so the thresholds that drop 10-40% here are higher (0.3-0.45)
# than on a trained model (bench/results/dualsparse_quality.md). Configurations run
# interleaved in rounds; every figure is the median over rounds of `switchyard bench`'s median
# over its repetitions, and every ratio compares runs of the same invocation.
#
#   bench/dualsparse_speed.sh [--threads N] [--rounds N] [--out FILE.md]
#
# Defaults: 2 threads (1 per rank under mpirun), 3 rounds, bench/results/dualsparse_speed.md.
# Run on an idle machine: background load changes the ratios.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
threads=2
rounds=3
out="$root/bench/results/dualsparse_speed.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --threads) threads="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dualsparse_speed.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
work="${DUALSPARSE_WORK:-$(mktemp -d)}"
mkdir -p "$work"
py=/usr/bin/python3
mpi=(mpirun --oversubscribe --allow-run-as-root)

m="$work/A"
[ -d "$m" ] || "$sy" make-tiny --reference-shape A --dtype BF16 --out "$m" >/dev/null
ids=$("$py" -c "import random; random.seed(1); print(','.join(str(random.randrange(32000)) for _ in range(512)))")
[ -f "$work/imp.safetensors" ] || "$sy" profile-neurons -m "$m" --ids "$ids" -o "$work/imp.safetensors" >/dev/null
[ -d "$m-p" ] || "$sy" partition -m "$m" -o "$m-p" --factor 2 >/dev/null
[ -d "$m-q" ] || "$sy" partition -m "$m" -o "$m-q" --factor 2 --mode partial >/dev/null
[ -d "$m-r" ] || "$sy" partition -m "$m" -o "$m-r" --factor 2 --importance "$work/imp.safetensors" >/dev/null
printf '0 1 2 3 4 5 6 7 8 9\n10 11 12 13 14 15\n' >"$work/skewed.placement"

th() { echo --capacity-policy threshold --drop-threshold "$1"; }
# label | model | flags
single=(
  "dropless|$m|"
  "complete partition, dropless|$m-p|"
  "partial partition, dropless|$m-q|"
  "1T 0.3|$m-p|$(th 0.3)"
  "1T 0.4|$m-p|$(th 0.4)"
  "1T 0.45|$m-p|$(th 0.45)"
  "2T 0.39,0.41|$m-r|$(th 0.39,0.41)"
  "2T 0.44,0.46|$m-r|$(th 0.44,0.46)"
)
ep=(
  "dropless|$m-p|"
  "1T 0.3|$m-p|$(th 0.3)"
  "1T 0.4|$m-p|$(th 0.4)"
  "1T 0.45|$m-p|$(th 0.45)"
  "load-aware 0.4|$m-p|$(th 0.4) --drop-load-aware"
  "load-aware 0.45|$m-p|$(th 0.45) --drop-load-aware"
  "load-aware 0.5|$m-p|$(th 0.5) --drop-load-aware"
)
bench=(bench --prompt 128 --decode 16 --reps 3)
runs="$work/runs.tsv"
: >"$runs"
for ((r = 1; r <= rounds; r++)); do
  echo "round $r of $rounds" >&2
  for i in "${!single[@]}"; do
    IFS='|' read -r label model flags <<<"${single[$i]}"
    j="$work/s$i-r$r.json"
    # shellcheck disable=SC2086
    "$sy" "${bench[@]}" -m "$model" --batch 4 --threads "$threads" $flags --json "$j" \
      --load-json "$j.load" >/dev/null 2>"$j.err" || { cat "$j.err" >&2; exit 1; }
    printf 'single\t%s\t%s\n' "$label" "$j" >>"$runs"
  done
  for i in "${!ep[@]}"; do
    IFS='|' read -r label model flags <<<"${ep[$i]}"
    j="$work/e$i-r$r.json"
    # Modelled: one process, the two ranks' 8 sequences split over the placement's 2 devices.
    # shellcheck disable=SC2086
    "$sy" "${bench[@]}" -m "$model" --batch 8 --threads "$threads" --placement "$work/skewed.placement" \
      $flags --json "$j.one" --load-json "$j.one.load" >/dev/null 2>"$j.err" || { cat "$j.err" >&2; exit 1; }
    # shellcheck disable=SC2086
    "${mpi[@]}" -np 2 "$sy" "${bench[@]}" -m "$model" --batch 4 --threads 1 \
      --placement "$work/skewed.placement" $flags --json "$j" --load-json "$j.load" --ep-json "$j.ep" \
      >/dev/null 2>"$j.err" || { cat "$j.err" >&2; exit 1; }
    printf 'ep\t%s\t%s\n' "$label" "$j" >>"$runs"
  done
done

"$py" - "$runs" "$out" "$threads" "$rounds" "$(nproc)" "$(lscpu | sed -n 's/^Model name: *//p' | head -1)" <<'PY'
import collections, datetime, json, statistics, sys
runs, out, threads, rounds, cores, cpu = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(runs)]
by = collections.defaultdict(list)
for kind, label, j in rows:
    by[(kind, label)].append(j)
med = statistics.median

def drop(j):
    return json.load(open(j))["expert_compute_dropped"]["total"]

def single(label):
    js = by[("single", label)]
    b = [json.load(open(j)) for j in js]
    return dict(drop=med(drop(j + ".load") for j in js),
                moe=med(x["prefill_phase_s"]["moe fwd"] for x in b),
                prefill=med(x["prefill_tokens_per_s"] for x in b),
                decode=med(x["decode_tokens_per_s"] for x in b))

def modelled_work(load_json):
    # The busiest device's pairs (all parts have the same width), summed over layers.
    l = json.load(open(load_json))["layers"]
    return sum(max(x["tokens_per_device"]) for x in l), sum(sum(x["tokens_per_device"]) for x in l)

def ep(label):
    js = by[("ep", label)]
    slowest, moe, prefill = [], [], []
    for j in js:
        ranks = json.load(open(j + ".ep"))["ranks"]
        slowest.append(max(sum(x["compute_s"] for x in r["layers"]) for r in ranks))
        b = json.load(open(j))
        moe.append(b["prefill_phase_s"]["moe fwd"])
        prefill.append(b["prefill_tokens_per_s"])
    work = [modelled_work(j + ".one.load") for j in js]
    return dict(drop=med(drop(j + ".load") for j in js), drop_one=med(drop(j + ".one.load") for j in js),
                busiest=med(w[0] for w in work), slowest=med(slowest), moe=med(moe),
                prefill=med(prefill))

labels_s = list(dict.fromkeys(l for k, l, _ in rows if k == "single"))
labels_e = list(dict.fromkeys(l for k, l, _ in rows if k == "ep"))
S = {l: single(l) for l in labels_s}
E = {l: ep(l) for l in labels_e}
b, be = S["dropless"], E["dropless"]
lines = ["# DualSparse-MoE: speed against expert computation dropped", "",
         f"Made by `bench/dualsparse_speed.sh` ({datetime.date.today()}) on {cores} cores ({cpu}); "
         f"model `make-tiny --reference-shape A` (Mixtral-like, BF16, random weights); "
         f"`switchyard bench --prompt 128 --decode 16 --reps 3`; medians over {rounds} interleaved "
         "rounds. Drop: the share of expert computation skipped (prefill and decode). Ideal: the "
         "MoE-time ratio if time fell exactly with the computation removed, 1 / (1 - drop).", "",
         f"## One process, {threads} threads, 4 sequences", "",
         "| configuration | drop | MoE prefill time | MoE speed-up (ideal) | prefill tokens/s | decode tokens/s |",
         "|---|---|---|---|---|---|"]
for l in labels_s:
    x = S[l]
    lines.append(f"| {l} | {100 * x['drop']:.1f}% | {1000 * x['moe']:.0f} ms | "
                 f"{b['moe'] / x['moe']:.2f}x ({1 / (1 - x['drop']):.2f}x) | "
                 f"{x['prefill']:.0f} ({x['prefill'] / b['prefill']:.2f}x) | "
                 f"{x['decode']:.1f} ({x['decode'] / b['decode']:.2f}x) |")
lines += ["", "## Expert parallelism, skewed placement (device 0: experts 0-4, device 1: experts 5-7)", "",
          "The complete partition (16 parts) over 2 devices, 4 sequences per device. Modelled: one "
          "process with `--placement` (8 sequences split over the 2 devices), the busiest device's "
          "pairs summed over layers, relative to dropless (a model of the slowest device's expert "
          "time, not a measurement). Measured: `mpirun -np 2`, 1 thread per rank, the slowest "
          "rank's expert compute seconds (`--ep-json` compute_s summed over layers, prefill and "
          "decode), the prefill MoE time (mean over ranks, waits included) and prefill tokens/s.", "",
          "| configuration | drop (one process / mpirun) | modelled slowest device | measured slowest rank | MoE prefill time | prefill tokens/s |",
          "|---|---|---|---|---|---|"]
for l in labels_e:
    x = E[l]
    lines.append(f"| {l} | {100 * x['drop_one']:.1f}% / {100 * x['drop']:.1f}% | "
                 f"{x['busiest'] / be['busiest']:.2f} | "
                 f"{x['slowest'] / be['slowest']:.2f} ({1000 * x['slowest']:.0f} ms) | "
                 f"{be['moe'] / x['moe']:.2f}x ({1000 * x['moe']:.0f} ms) | "
                 f"{x['prefill']:.0f} ({x['prefill'] / be['prefill']:.2f}x) |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
