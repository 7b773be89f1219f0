#!/usr/bin/env bash
# ScMoE's quality study (papers.md section 3, Table 3 and the position ablation) reproduced in
# kind: small MoE language models trained here on the King James Bible with the same budget,
# one per variant -- top-2 MoE, top-1 MoE, shared-expert MoE (top-1 + a shared expert on the
# same layer), ScMoE with the routed branch on a shortcut from the preceding layer at Pos-1 /
# Pos-2 / Pos-3 with CG-1, and Pos-2 with direct add and CG-2 -- and their validation loss on
# held-out chapters, over several seeds.
#
#   bench/scmoe_quality.sh [--steps N] [--seeds 1,2,3] [--jobs J] [--variants a,b] [--out FILE.md]
#                          [--merge EARLIER.tsv]
#
# Defaults: 600 steps of 8 x 256 tokens, seeds 1,2,3, 2 runs at a time with 1 thread each,
# bench/results/scmoe_quality.md (and .tsv beside it). Every variant has 6 layers with MoE in
# every 2nd (the paper's GPT-MoE layout), hidden 256, 8 experts of width 256, dense MLP width
# 512; the shared expert is as wide as one routed expert, so top-2, shared-expert MoE and ScMoE
# compute the same FLOPs per token (top-1 computes less). --merge adds the rows of an earlier
# run's .tsv (same settings, other seeds) to the table.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
steps=600
seeds=1,2,3
jobs=2
out="$root/bench/results/scmoe_quality.md"
only=""
merge=""
while [ $# -gt 0 ]; do
  case "$1" in
    --steps) steps="$2"; shift 2 ;;
    --seeds) seeds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --variants) only="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --merge) merge="$2"; shift 2 ;;
    -h|--help) sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "scmoe_quality.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[ -z "$merge" ] || [ -f "$merge" ] || { echo "scmoe_quality.sh: --merge: no file '$merge'" >&2; exit 2; }
[ -z "$merge" ] || merged_rows=$(tail -n +2 "$merge")
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
work="${SCMOE_WORK:-$(mktemp -d)}"
mkdir -p "$work"

# name | description | flags
variants=(
  "top2|top-2 MoE (baseline)|--scmoe-shortcut none --scmoe-combine add --shared-ffn 0 --top-k 2"
  "top1|top-1 MoE|--scmoe-shortcut none --scmoe-combine add --shared-ffn 0 --top-k 1"
  "shared|shared-expert MoE (top-1 + shared, same layer)|--scmoe-shortcut none --scmoe-combine add --top-k 1"
  "pos1_cg1|ScMoE Pos-1 + CG-1|--scmoe-shortcut pos1 --scmoe-combine cg1"
  "pos2_cg1|ScMoE Pos-2 + CG-1 (the paper's choice)|--scmoe-shortcut pos2 --scmoe-combine cg1"
  "pos3_cg1|ScMoE Pos-3 + CG-1|--scmoe-shortcut pos3 --scmoe-combine cg1"
  "pos2_add|ScMoE Pos-2 + direct add|--scmoe-shortcut pos2 --scmoe-combine add"
  "pos2_cg2|ScMoE Pos-2 + CG-2|--scmoe-shortcut pos2 --scmoe-combine cg2"
)
common=(--family scmoe --hidden 256 --layers 6 --heads 8 --kv-heads 4 --experts 8 --expert-ffn 256
        --dense-ffn 512 --steps "$steps" --batch 8 --seq 256 --warmup $((steps / 15))
        --eval-every "$steps" --eval-batches 20 --log-every 50 --threads 1)

runs=()
for v in "${variants[@]}"; do
  IFS='|' read -r name _ _ <<<"$v"
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then continue; fi
  for seed in ${seeds//,/ }; do runs+=("$name|$seed"); done
done

run_one() {  # name seed
  local name="$1" seed="$2" flags="" v
  for v in "${variants[@]}"; do [[ "$v" == "$name|"* ]] && flags="${v##*|}"; done
  local dir="$work/$name-s$seed"
  if [ -f "$dir/done" ]; then return 0; fi
  rm -rf "$dir"
  # shellcheck disable=SC2086
  "$sy" train --out "$dir" "${common[@]}" --seed "$seed" $flags >"$dir.log" 2>&1 \
    || { echo "FAILED: $name seed $seed (see $dir.log)" >&2; return 1; }
  touch "$dir/done"
}

echo "scmoe_quality: ${#runs[@]} training runs of $steps steps, $jobs at a time, in $work" >&2
running=0
for r in "${runs[@]}"; do
  IFS='|' read -r name seed <<<"$r"
  run_one "$name" "$seed" &
  running=$((running + 1))
  if [ "$running" -ge "$jobs" ]; then wait -n; running=$((running - 1)); fi
  echo "  started $name seed $seed" >&2
done
wait

tsv="${out%.md}.tsv"
printf 'variant\tseed\tval_ce\ttrain_tokens_per_s\tseconds\n' >"$tsv"
[ -z "$merge" ] || printf '%s\n' "$merged_rows" >>"$tsv"
for r in "${runs[@]}"; do
  IFS='|' read -r name seed <<<"$r"
  log="$work/$name-s$seed/train_log.jsonl"
  [ -f "$log" ] || continue
  /usr/bin/python3 - "$log" "$name" "$seed" >>"$tsv" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
val = [r for r in rows if "val_ce" in r][-1]
tps = sorted(r["tokens_per_s"] for r in rows if r.get("step", 0) > 1 and "tokens_per_s" in r)
elapsed = [r["elapsed_s"] for r in rows if "elapsed_s" in r]
print(f"{sys.argv[2]}\t{sys.argv[3]}\t{val['val_ce']:.4f}\t{tps[len(tps)//2]:.0f}\t{elapsed[-1]:.0f}")
PY
done

/usr/bin/python3 - "$tsv" "$out" "$steps" <<'PY'
import statistics, sys, datetime
tsv, out, steps = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(tsv) if l.strip()][1:]
seeds = ",".join(str(s) for s in sorted({int(r[1]) for r in rows}))
names = {"top2": "top-2 MoE (baseline)", "top1": "top-1 MoE",
         "shared": "shared-expert MoE", "pos1_cg1": "ScMoE Pos-1 + CG-1",
         "pos2_cg1": "ScMoE Pos-2 + CG-1", "pos3_cg1": "ScMoE Pos-3 + CG-1",
         "pos2_add": "ScMoE Pos-2 + direct add", "pos2_cg2": "ScMoE Pos-2 + CG-2"}
paper = {"top2": "3.2704", "shared": "3.2406", "pos1_cg1": "3.2375", "pos2_cg1": "3.2248",
         "pos3_cg1": "3.2413", "pos2_add": "3.2368", "pos2_cg2": "3.2329", "top1": "-"}
by = {}
for v, s, ce, tps, sec in rows:
    by.setdefault(v, []).append((int(s), float(ce), float(tps)))
base = statistics.mean(ce for _, ce, _ in by.get("top2", [(0, float("nan"), 0)]))
lines = [
    "# ScMoE quality: validation loss of small MoE models trained here on KJV",
    "",
    f"Made by `bench/scmoe_quality.sh` ({datetime.date.today()}) on this machine's CPU. Each run:",
    f"`switchyard train --family scmoe`, 6 layers (MoE in layers 1, 3, 5), hidden 256, 8 experts",
    f"of width 256, dense MLP 512, {steps} steps of 8 x 256 tokens (AdamW lr 3e-3, cosine), seeds",
    f"{seeds}; validation cross-entropy (nats/token) on 20 batches of held-out chapters. Runs",
    "shared the machine (two at a time), so no throughput is reported here (see scmoe_speed.md).",
    "The paper's column is its Table 3 / position ablation (GPT2-MoE-Small on OpenWebText,",
    "validation loss): a different model, data and scale; only the ordering is comparable.",
    "",
    "| variant | val CE per seed | mean | vs top-2 | paper |",
    "|---|---|---|---|---|",
]
for v in ["top2", "top1", "shared", "pos1_cg1", "pos2_cg1", "pos3_cg1", "pos2_add", "pos2_cg2"]:
    if v not in by:
        continue
    r = sorted(by[v])
    ces = [ce for _, ce, _ in r]
    mean = statistics.mean(ces)
    sd = f" +- {statistics.stdev(ces):.3f}" if len(ces) > 1 else ""
    lines.append(f"| {names[v]} | {', '.join(f'{c:.3f}' for c in ces)} | {mean:.3f}{sd} | "
                 f"{mean - base:+.3f} | {paper[v]} |")
open(out, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
