#!/usr/bin/env bash
# Switchyard against llama.cpp on the same GGUF files, side by side in one run (issue 18):
# prefill and decode tokens/s per shape, weight type and thread count, and the ratio of each
# round's pair (Switchyard / llama.cpp; median over rounds). llama.cpp is node-llama-cpp's
# prebuilt build from the npm registry (bench/peer/install.sh), driven by
# bench/peer/llama_cpp_peer.mjs; no figure is copied from anywhere.
#
#   bench/llama_cpp_side_by_side.sh [--shapes A,B] [--types BF16,Q8_0,Q4_0] [--threads 1,2]
#                                   [--prompt 128] [--decode 32] [--rounds 3] [--out FILE.md]
#
# Models: `make-tiny --reference-shape S` (random weights, Mixtral layout), written by
# `switchyard quantize --type T`; both engines read that file. Token ids cycle through the
# vocabulary (no tokenizer). Each round runs every configuration once per engine, alternating.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shapes=A
types=BF16,Q8_0,Q4_0
threads=1,2
prompt=128
decode=32
rounds=3
out="$root/bench/results/llama_cpp_side_by_side.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --shapes) shapes="$2"; shift 2 ;;
    --types) types="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    --decode) decode="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "llama_cpp_side_by_side.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
"$root/bench/peer/install.sh"
peer=(node "$root/bench/peer/llama_cpp_peer.mjs")
work="${SIDE_BY_SIDE_WORK:-$(mktemp -d)}"
mkdir -p "$work"
raw="$work/raw.tsv"  # shape type threads round engine prefill decode
: > "$raw"

IFS=, read -r -a shape_list <<< "$shapes"
IFS=, read -r -a type_list <<< "$types"
IFS=, read -r -a thread_list <<< "$threads"
for s in "${shape_list[@]}"; do
  if [ ! -d "$work/shape$s" ]; then
    echo "making shape $s ..." >&2
    "$sy" make-tiny --reference-shape "$s" --dtype BF16 --out "$work/shape$s" >&2
  fi
  for t in "${type_list[@]}"; do
    [ -f "$work/shape$s.$t.gguf" ] ||
      "$sy" quantize --model "$work/shape$s" --type "$t" --out "$work/shape$s.$t.gguf" >&2
  done
done

for ((r = 1; r <= rounds; r++)); do
  for s in "${shape_list[@]}"; do
    for t in "${type_list[@]}"; do
      for n in "${thread_list[@]}"; do
        f="$work/shape$s.$t.gguf"
        echo "round $r/$rounds: shape $s $t, $n thread(s)" >&2
        "$sy" bench --model "$f" --threads "$n" --prompt "$prompt" --decode "$decode" --reps 3 \
          --json "$work/sy.json" > /dev/null
        /usr/bin/python3 -c "import json,sys; j=json.load(open(sys.argv[1])); print('\t'.join(sys.argv[2:] + [str(j['prefill_tokens_per_s']), str(j['decode_tokens_per_s'])]))" \
          "$work/sy.json" "$s" "$t" "$n" "$r" switchyard >> "$raw"
        "${peer[@]}" bench --model "$f" --threads "$n" --prompt-len "$prompt" --gen "$decode" \
          --reps 3 > "$work/peer.jsonl"
        /usr/bin/python3 -c "
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
p = statistics.median(x['prefill_tps'] for x in rows)
d = statistics.median(x['decode_tps'] for x in rows)
print('\t'.join(sys.argv[2:] + [str(p), str(d)]))" "$work/peer.jsonl" "$s" "$t" "$n" "$r" llama.cpp >> "$raw"
      done
    done
  done
done

/usr/bin/python3 - "$raw" "$prompt" "$decode" "$rounds" > "$out.tmp" <<'EOF'
import collections, statistics, sys, platform
raw, prompt, decode, rounds = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
runs = collections.defaultdict(dict)  # (shape, type, threads, round) -> engine -> (p, d)
for line in open(raw):
    s, t, n, r, eng, p, d = line.rstrip("\n").split("\t")
    runs[(s, t, int(n), int(r))][eng] = (float(p), float(d))
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
print("# Switchyard vs llama.cpp, side by side on the same GGUF files\n")
print(f"Made by `bench/llama_cpp_side_by_side.sh` on this machine ({cpu}). Prompt {prompt} tokens "
      f"in one batch, then {decode} greedy decode steps; each engine's figure is the median of 3 "
      f"repetitions per round, {rounds} rounds alternating the engines. Ratio = Switchyard / "
      "llama.cpp per round, median over rounds (range in brackets). llama.cpp: node-llama-cpp "
      "3.22.1's prebuilt CPU build (npm), driven from Node.js.\n")
print("| shape | weights | threads | prefill tok/s Switchyard | llama.cpp | ratio | decode tok/s Switchyard | llama.cpp | ratio |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
keys = sorted({k[:3] for k in runs})
for key in keys:
    rs = [runs[key + (r,)] for r in range(1, int(rounds) + 1) if key + (r,) in runs]
    rs = [x for x in rs if len(x) == 2]
    med = lambda xs: statistics.median(xs)
    sp = med([x["switchyard"][0] for x in rs]); lp = med([x["llama.cpp"][0] for x in rs])
    sd = med([x["switchyard"][1] for x in rs]); ld = med([x["llama.cpp"][1] for x in rs])
    rp = [x["switchyard"][0] / x["llama.cpp"][0] for x in rs]
    rd = [x["switchyard"][1] / x["llama.cpp"][1] for x in rs]
    print(f"| {key[0]} | {key[1]} | {key[2]} | {sp:.1f} | {lp:.1f} | **{med(rp):.2f}x** "
          f"[{min(rp):.2f}-{max(rp):.2f}] | {sd:.1f} | {ld:.1f} | **{med(rd):.2f}x** "
          f"[{min(rd):.2f}-{max(rd):.2f}] |")
# Each engine at its best thread count: on a small machine an engine may run better on fewer
# threads than cores, and comparing each at its best is the fair comparison.
print("\nEach engine at its best thread count (medians over rounds):\n")
print("| shape | weights | prefill best: Switchyard / llama.cpp | ratio | decode best: Switchyard / llama.cpp | ratio |")
print("|---|---|---:|---:|---:|---:|")
for sw in sorted({k[:2] for k in runs}):
    best = {}
    for eng in ("switchyard", "llama.cpp"):
        cand = []
        for key in keys:
            if key[:2] != sw:
                continue
            vals = [runs[key + (r,)][eng] for r in range(1, int(rounds) + 1)
                    if eng in runs.get(key + (r,), {})]
            if vals:
                cand.append((statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals), key[2]))
        best[eng] = (max((c[0], c[2]) for c in cand), max((c[1], c[2]) for c in cand))
    (sp, spn), (sd, sdn) = best["switchyard"]
    (lp, lpn), (ld, ldn) = best["llama.cpp"]
    print(f"| {sw[0]} | {sw[1]} | {sp:.0f} ({spn}T) / {lp:.0f} ({lpn}T) | **{sp / lp:.2f}x** | "
          f"{sd:.1f} ({sdn}T) / {ld:.1f} ({ldn}T) | **{sd / ld:.2f}x** |")
EOF
mv "$out.tmp" "$out"
cat "$out"
