#!/usr/bin/env bash
# ReaLB (papers.md section 7) reproduced in kind: per-rank precision switching under expert
# parallelism, bf16 vs low-all vs realb.
#
#   bench/realb.sh [--model DIR] [--chars N] [--shape A|B] [--layers L] [--reps R] [--out FILE.md]
#
# Quality: perplexity of --model (default models/kjv-moe-9m) on the first N characters (default
# 60000) of the held-out KJV split, windows of 256 tokens, 8 per forward call (2048 tokens per
# step: the paper's threshold), 2 devices EMULATED in one process (the decisions and logits
# equal mpirun's: tests/reference/test_realb.sh), with the contiguous placement and a skewed one
# (the 4 experts the bf16 run loaded most, all on device 0).
# Speed: `switchyard bench` under mpirun (one thread per rank; this machine has 2 cores) on a
# random model of reference shape --shape (default A, --layers 4), 2048 prompt tokens per step
# over the ranks, exchanges overlapped; the skew is made by an uneven placement. 2 ranks, 2
# ranks over an EMULATED 10 Gbit/s link, 4 ranks oversubscribed. The EPLB-style baseline keeps
# bf16 and replicates the hot rank's hottest expert (1 replica) or two hottest (2 replicas), by a
# bf16 run's loads, on the least-loaded rank. Each policy runs --reps times (default 3; medians),
# interleaved, all in this run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$root/models/kjv-moe-9m"
chars=60000
shape=A
layers=4
reps=3
out="$root/bench/results/realb.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --chars) chars="$2"; shift 2 ;;
    --shape) shape="$2"; shift 2 ;;
    --layers) layers="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "realb.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
py=/usr/bin/python3
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The policies compared: NAME|flags.
policies=(
  "bf16|--precision-policy bf16"
  "low-all int8|--precision-policy low-all --low-precision int8"
  "realb int8|--precision-policy realb --low-precision int8"
  "low-all q4|--precision-policy low-all --low-precision q4"
  "realb q4|--precision-policy realb --low-precision q4"
  "low-all nvfp4 (emulated)|--precision-policy low-all --low-precision nvfp4"
  "realb nvfp4 (emulated)|--precision-policy realb --low-precision nvfp4"
)

# ---- quality
"$sy" train --out "$work/split" --export-corpus "$work/split" >/dev/null
head -c "$chars" "$work/split/validation.txt" >"$work/text.txt"
"$sy" score -m "$model" -f "$work/text.txt" --window 256 --batch 8 --threads 2 --quiet \
  --load-json "$work/loads.json" >/dev/null 2>&1
"$py" - "$work/loads.json" "$work/skewed.txt" <<'PY'
import json, sys
j = json.load(open(sys.argv[1]))
E = len(j["layers"][0].get("tokens_per_expert", j["layers"][0].get("loads")))
tot = [0] * E
for l in j["layers"]:
    for e, v in enumerate(l.get("tokens_per_expert", l.get("loads"))):
        tot[e] += v
hot = sorted(range(E), key=lambda e: -tot[e])[: E // 2]
cold = [e for e in range(E) if e not in hot]
open(sys.argv[2], "w").write(" ".join(map(str, sorted(hot))) + "\n" + " ".join(map(str, cold)) + "\n")
PY
quality="$work/quality.tsv"
: >"$quality"
for placement in contiguous skewed; do
  place=(--devices 2)
  [ "$placement" = skewed ] && place=(--placement "$work/skewed.txt")
  for p in "${policies[@]}"; do
    IFS='|' read -r name flags <<<"$p"
    echo "quality: $placement, $name ..." >&2
    # shellcheck disable=SC2086
    line=$("$sy" score -m "$model" -f "$work/text.txt" --window 256 --batch 8 --threads 2 --quiet \
      "${place[@]}" $flags --precision-json "$work/q.json" 2>/dev/null | grep -o 'perplexity [0-9.]*')
    "$py" - "$work/q.json" "$placement" "$name" "${line#perplexity }" >>"$quality" <<'PY'
import json, os, sys
path, placement, name, ppl = sys.argv[1:]
low = calls = 0
if os.path.exists(path):
    j = json.load(open(path))
    low = sum(k["low_calls"] for k in j["ranks"])
    calls = sum(k["calls"] for k in j["ranks"])
    os.remove(path)
print(f"{placement}\t{name}\t{ppl}\t{low}\t{calls}")
PY
  done
done

# ---- speed
"$sy" make-tiny --out "$work/speed" --reference-shape "$shape" --layers "$layers" >/dev/null
printf '0 1 2 3 4\n5 6 7\n' >"$work/uneven2.txt"
printf '0 1 2\n3 4\n5 6\n7\n' >"$work/uneven4.txt"
experts=$(grep -o '"num_local_experts": *[0-9]*' "$work/speed/config.json" | grep -o '[0-9]*$')
[ "$experts" = 8 ] || { echo "realb.sh: the speed model has $experts experts; the uneven placements need 8" >&2; exit 1; }
link=(--ep-link-gbps 10 --ep-link-latency-us 20)
speed="$work/speed.tsv"
: >"$speed"
# setup|ranks|flags: 2 ranks on shared memory, 2 ranks over an EMULATED 10 Gbit/s link (the
# dispatch takes long enough to hide a conversion), 4 ranks oversubscribed on the 2 cores.
setups=("2 ranks|2|" "2 ranks, EMULATED 10 Gbit/s link|2|${link[*]}" "4 ranks (oversubscribed)|4|")
# EPLB-style replicas: the hot rank's (rank 0's) hottest experts, by a bf16 run's loads, copied
# to the least-loaded rank (the last).
for ranks in 2 4; do
  echo "speed: loads for the EPLB replicas, $ranks ranks ..." >&2
  mpirun --oversubscribe --allow-run-as-root -np "$ranks" "$sy" bench -m "$work/speed" \
    --threads 1 --prompt $((2048 / ranks)) --decode 0 --reps 1 --placement "$work/uneven$ranks.txt" \
    --load-json "$work/loads$ranks.json" >/dev/null 2>"$work/b.err" \
    || { echo "realb.sh: bench failed: $(tail -3 "$work/b.err")" >&2; exit 1; }
  "$py" - "$work/loads$ranks.json" "$work/uneven$ranks.txt" "$work/rep1_$ranks.txt" \
    "$work/rep2_$ranks.txt" <<'PY2'
import json, sys
j = json.load(open(sys.argv[1]))
lines = open(sys.argv[2]).read().split("\n")[:-1]
tot = {}
for l in j["layers"]:
    for e, v in enumerate(l["tokens_per_expert"]):
        tot[e] = tot.get(e, 0) + v
hot = sorted(map(int, lines[0].split()), key=lambda e: -tot[e])
for n, path in ((1, sys.argv[3]), (2, sys.argv[4])):
    out = lines[:-1] + [lines[-1] + "".join(f" +{e}" for e in hot[:n])]
    open(path, "w").write("\n".join(out) + "\n")
PY2
done
for r in $(seq 1 "$reps"); do
  for setup in "${setups[@]}"; do
  IFS='|' read -r where ranks extra <<<"$setup"
  prompt=$((2048 / ranks))
  for p in "bf16|--precision-policy bf16" "low-all int8|--precision-policy low-all --low-precision int8" \
           "realb int8|--precision-policy realb --low-precision int8" \
           "low-all q4|--precision-policy low-all --low-precision q4" \
           "realb q4|--precision-policy realb --low-precision q4" \
           "EPLB, 1 replica|--precision-policy bf16|rep1_" "EPLB, 2 replicas|--precision-policy bf16|rep2_"; do
    IFS='|' read -r name flags place <<<"$p"
    [ "$where" = "2 ranks" ] || case "$name" in *q4) continue ;; esac
    echo "speed round $r, $where: $name ..." >&2
    # shellcheck disable=SC2086
    mpirun --oversubscribe --allow-run-as-root -np "$ranks" "$sy" bench -m "$work/speed" \
      --threads 1 --prompt "$prompt" --decode 0 --reps 1 \
      --placement "$work/${place:-uneven}$ranks.txt" \
      --ep-overlap $extra $flags --json "$work/b.json" --precision-json "$work/p.json" \
      >/dev/null 2>"$work/b.err" \
      || { echo "realb.sh: bench failed: $(tail -3 "$work/b.err")" >&2; exit 1; }
    "$py" - "$work/b.json" "$work/p.json" "$where|$name" "$r" >>"$speed" <<'PY'
import json, sys
b, p, name, r = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), sys.argv[3], sys.argv[4]
ranks = p["ranks"]
low = sum(k["low_calls"] for k in ranks)
calls = sum(k["calls"] for k in ranks)
conv = sum(k["convert_s"] for k in ranks)
hidden = sum(k["convert_hidden_s"] for k in ranks)
print(f"{name}\t{r}\t{b['prefill_tokens_per_s']}\t{p['slowest_rank_moe_s']}\t{low}\t{calls}\t{conv}\t{hidden}")
PY
  done
  done
done

"$py" - "$quality" "$speed" "$out" "$model" "$chars" "$shape" "$layers" "$reps" "$work/speed/config.json" <<'PY'
import json, statistics, sys, datetime
qpath, spath, out, model, chars, shape, layers, reps, config = sys.argv[1:]
cfg = json.load(open(config))
H, I, NL = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"]
# Bytes of one expert (gate, up, down) in each form; int8 rows carry a float scale and an int32 sum.
expert_bytes = {"bf16": 3 * I * H * 2, "int8": 3 * I * H + 8 * (2 * I + H), "q4": 3 * I * H * 18 // 32}
most_hosted = {2: 5, 4: 3}  # rank 0's experts in the uneven placements


def extra_mb(where, name):
    """Memory a rank holds beyond its bf16 experts (the most of any rank)."""
    ranks = 4 if where.startswith("4") else 2
    if name.startswith("EPLB"):
        return int(name.split(", ")[1].split()[0]) * NL * expert_bytes["bf16"] / 1e6
    for fmt in ("int8", "q4"):
        if fmt in name:  # one layer's converted experts at a time
            return most_hosted[ranks] * expert_bytes[fmt] / 1e6
    return 0.0
q = [l.rstrip("\n").split("\t") for l in open(qpath)]
s = [l.rstrip("\n").split("\t") for l in open(spath)]
L = []
L.append("# ReaLB on this CPU: per-rank precision switching, bf16 vs low-all vs realb")
L.append("")
L.append(f"Made by `bench/realb.sh` ({datetime.date.today()}) on this 2-core machine's CPU. The paper's")
L.append("FP4 tensor cores do not exist here: the low formats are int8 W8A8 (per-row weight and")
L.append("per-token activation scales, AVX-512 VNNI), Q4_0 blocks with int8 activations (W4A8), and")
L.append("NVFP4 W4A4 **emulated** in float32 (its accuracy only; no speed).")
L.append("")
L.append("## Quality: perplexity on held-out KJV")
L.append("")
L.append(f"`{model.rstrip('/').split('/')[-1]}`, the first {chars} characters of the validation split,")
L.append("windows of 256 tokens, 8 per step (2048 tokens: every step meets the 2048-token threshold).")
L.append("2 devices **emulated** in one process (the decisions and logits equal mpirun -np 2's; see")
L.append("`tests/reference/test_realb.sh`). Contiguous: experts 0-3 / 4-7. Skewed: the 4 experts the")
L.append("bf16 run loaded most all on device 0. low calls = (device, layer call) pairs run low.")
L.append("")
L.append("| placement | policy | perplexity | vs bf16 | low calls |")
L.append("|---|---|---:|---:|---:|")
base = {}
for placement, name, ppl, low, calls in q:
    if name == "bf16":
        base[placement] = float(ppl)
for placement, name, ppl, low, calls in q:
    d = 100 * (float(ppl) / base[placement] - 1)
    L.append(f"| {placement} | {name} | {float(ppl):.3f} | {d:+.2f}% | {low} / {calls} |")
L.append("")
L.append("## Speed: mpirun -np 2, real MPI")
L.append("")
L.append(f"`switchyard bench` on a random model of reference shape {shape} ({layers} layers, 8 experts,")
L.append("BF16), one thread per rank, 2048 prompt tokens per step over the ranks, all-to-alls")
L.append("overlapped (--ep-overlap). The skew is made by the placement: with 2 ranks experts 0-4 on")
L.append("rank 0 and 5-7 on rank 1 (rank 0 holds about 5/8 of the rows: 1.25x the mean); with 4")
L.append("ranks 0-2 / 3-4 / 5-6 / 7 (rank 0 about 1.5x the mean). The EMULATED link makes every")
L.append("exchange last at least 20 us + bytes / 10 Gbit/s (a slow interconnect; this machine's")
L.append("shared-memory MPI is far faster). 4 ranks share 2 cores (oversubscribed): their times")
L.append(f"include waiting for a core. Medians of {reps} rounds, policies interleaved within each round.")
L.append("EPLB, n replicas: the EPLB-style baseline. Precision stays bf16; the n experts of rank 0 that a")
L.append("bf16 run loaded most are copied, in every layer, to the least-loaded rank (the last), and each")
L.append("copy's rows are shared: a rank hosting the expert keeps its own rows, the others alternate")
L.append("between the hosts. Extra memory: what the most-burdened rank holds beyond its own bf16 experts:")
L.append(f"EPLB's copies in all {NL} layers; ReaLB's converted experts of one layer at a time.")
L.append("MoE slowest rank: sum over layer calls of the slowest rank's expert time plus its")
L.append("conversion time not hidden behind the dispatch (the warm-up pass included). Conversion")
L.append("hidden: the share of the conversion done while the rows were still in flight.")
L.append("")
L.append("| setup | policy | prefill tok/s | vs bf16 | MoE slowest rank, ms | vs bf16 | low calls | conversion ms | hidden | extra memory, MB |")
L.append("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
names = []
for row in s:
    if row[0] not in names:
        names.append(row[0])
med = {}
for n in names:
    rows = [r for r in s if r[0] == n]
    med[n] = dict(tps=statistics.median(float(r[2]) for r in rows),
                  moe=statistics.median(float(r[3]) for r in rows),
                  low=rows[-1][4], calls=rows[-1][5],
                  conv=statistics.median(float(r[6]) for r in rows),
                  hid=statistics.median(float(r[7]) for r in rows))
for n in names:
    where, name = n.split("|")
    b = med[where + "|bf16"]
    m = med[n]
    hid = f"{100 * m['hid'] / m['conv']:.0f}%" if m["conv"] > 0 else "-"
    L.append(f"| {where} | {name} | {m['tps']:.1f} | {m['tps'] / b['tps']:.2f}x | {1e3 * m['moe']:.1f} | "
             f"{b['moe'] / m['moe']:.2f}x | {m['low']} / {m['calls']} | {1e3 * m['conv']:.1f} | {hid} | "
             f"{extra_mb(where, name):.0f} |")
L.append("")
open(out, "w").write("\n".join(L) + "\n")
print("\n".join(L))
PY
echo "wrote $out" >&2
