#!/usr/bin/env bash
# DualSparse-MoE's quality claims (papers.md section 6) measured in kind on a model trained
# here: perplexity on held-out KJV text (the validation split the model never saw) against the
# share of expert computation dropped, for 1T-Drop at several thresholds and 2T-Drop
# (T - 0.01, T + 0.01, the paper's choice) on experts reconstructed by each of the four
# neuron-importance metrics (profiled on training text), plus the per-layer drop at one
# threshold (the paper: the threshold -> drop-rate mapping differs by layer).
#
#   bench/dualsparse_quality.sh [--model DIR] [--name NAME] [--chars N] [--calib-chars N]
#                               [--thresholds T,T,...] [--band B] [--out FILE.md]
#
# Defaults: models/kjv-moe-9m, the first 30000 characters of the validation split (windows of
# 256 tokens), calibration on the first 20000 characters of the training split, thresholds
# 0.05,0.08,0.1,0.12,0.15,0.2,0.25, 2T band 0.01 (T - B, T + B), bench/results/dualsparse_quality.md.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$root/models/kjv-moe-9m"
chars=30000
calib=20000
out="$root/bench/results/dualsparse_quality.md"
thresholds=0.05,0.08,0.1,0.12,0.15,0.2,0.25
band=0.01
name=""
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --chars) chars="$2"; shift 2 ;;
    --calib-chars) calib="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --thresholds) thresholds="$2"; shift 2 ;;
    --band) band="$2"; shift 2 ;;
    --name) name="$2"; shift 2 ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "dualsparse_quality.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
work="${DUALSPARSE_WORK:-$(mktemp -d)}"
mkdir -p "$work"
py=/usr/bin/python3

"$sy" train --out "$work/split" --export-corpus "$work/split" >/dev/null
head -c "$chars" "$work/split/validation.txt" >"$work/eval.txt"
head -c "$calib" "$work/split/train.txt" >"$work/calib.txt"
echo "profiling neurons on $calib characters of training text" >&2
"$sy" profile-neurons -m "$model" -f "$work/calib.txt" -o "$work/importance.safetensors" >/dev/null
metrics=(silu abs_silu silu_up abs_silu_up)
for m in "${metrics[@]}"; do
  [ -d "$work/rec-$m" ] || "$sy" partition -m "$model" -o "$work/rec-$m" --factor 2 \
    --importance "$work/importance.safetensors" --metric "$m" >/dev/null
done

score() {  # MODEL OUT.json [policy flags...]
  local m="$1" j="$2"
  shift 2
  "$sy" score -m "$m" -f "$work/eval.txt" --window 256 --batch 8 --threads 1 -q --json "$j" \
    --load-json "$j.load" "$@" >/dev/null 2>"$j.err" || { cat "$j.err" >&2; return 1; }
}
results="$work/results.tsv"
printf 'method\tthreshold\tjson\n' >"$results"
score "$model" "$work/dropless.json"
printf 'dropless\t0\t%s\n' "$work/dropless.json" >>"$results"
for t in ${thresholds//,/ }; do
  echo "threshold $t" >&2
  score "$model" "$work/1t-$t.json" --capacity-policy threshold --drop-threshold "$t"
  printf '1T\t%s\t%s\n' "$t" "$work/1t-$t.json" >>"$results"
  lo=$("$py" -c "print(round($t - $band, 4))")
  hi=$("$py" -c "print(round($t + $band, 4))")
  for m in "${metrics[@]}"; do
    score "$work/rec-$m" "$work/2t-$m-$t.json" --capacity-policy threshold --drop-threshold "$lo,$hi"
    printf '2T %s\t%s\t%s\n' "$m" "$t" "$work/2t-$m-$t.json" >>"$results"
  done
done

"$py" - "$results" "$out" "${name:-$(basename "$model")}" "$chars" "$calib" "$band" <<'PY'
import datetime, json, math, sys
results, out, model, chars, calib, band = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(results)][1:]
def load(j):
    s, l = json.load(open(j)), json.load(open(j + ".load"))
    return s["perplexity"], l.get("expert_compute_dropped", {"total": 0, "layers": []})
base_ppl, _ = load(rows[0][2])
methods = ["1T"] + [f"2T {m}" for m in ["silu", "abs_silu", "silu_up", "abs_silu_up"]]
ts = sorted({r[1] for r in rows if r[0] != "dropless"}, key=float)
data = {(r[0], r[1]): load(r[2]) for r in rows if r[0] != "dropless"}
lines = ["# DualSparse-MoE on a model trained here: perplexity vs expert computation dropped", "",
         f"Made by `bench/dualsparse_quality.sh` ({datetime.date.today()}): model "
         f"`{model}`, the first {chars} characters of the held-out KJV "
         "validation split (windows of 256 tokens). 1T: `--capacity-policy threshold "
         "--drop-threshold T`; 2T: experts partitioned in two and reconstructed by a neuron-"
         f"importance metric profiled on the first {calib} characters of the training split, "
         f"`--drop-threshold T-{band},T+{band}`" +
         (" (the paper's choice)" if float(band) == 0.01 else "") + ". Drop: the share of expert "
         "computation skipped. Dropless perplexity: "
         f"{base_ppl:.3f}.", "",
         "| T | " + " | ".join(f"{m}: drop, ppl" for m in methods) + " |",
         "|---|" + "---|" * len(methods)]
for t in ts:
    cells = []
    for m in methods:
        ppl, d = data[(m, t)]
        cells.append(f"{100 * d['total']:.1f}%, {ppl:.3f} ({100 * (ppl / base_ppl - 1):+.1f}%)")
    lines.append(f"| {t} | " + " | ".join(cells) + " |")
mid = ts[len(ts) // 2]
_, d = data[("1T", mid)]
lines += ["", f"Per-layer drop of 1T at T = {mid}: " +
          ", ".join(f"layer {l['layer']} {100 * l['share']:.1f}%" for l in d["layers"]) + "."]
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
