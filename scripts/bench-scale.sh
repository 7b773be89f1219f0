#!/usr/bin/env bash
# Throughput at scale (issue 21): prefill and decode over threads x tokens per forward x ranks on
# whatever machine this runs on, as one table with GFLOP/s against the GEMM peak and GB/s
# against the read bandwidth, both measured by bench_kernels in the same run.
#
#   scripts/bench-scale.sh [--shape A|B] [--model DIR] [--threads "1 2 ..."] [--tokens "128 ..."]
#                          [--prompt P] [--ranks "1 2 ..."] [--decode D] [--reps R] [--out FILE.md]
#
# --shape     the reference shape of machine.md to build with make-tiny (default A; BF16)
# --model     benchmark this checkpoint instead
# --threads   thread counts for one process (default: 1 2 4 8 16 ... up to the cores)
# --tokens    tokens per forward call = prompt x sequences (default 128 512 1024 2048 4096)
# --prompt    prompt tokens per sequence (default 128); sequences = tokens / prompt
# --ranks     expert-parallel rank counts under mpirun, each with cores / ranks threads and the
#             same sequences in all (default: 2 4 ... up to the cores; 1 = skip)
# --decode    decode steps per sequence (default 16); --reps timed repetitions (default 3, median)
# --out       the markdown table (default bench/results/scale_<host>.md)
#
# FLOPs per token: 2 x the active multiply-adds (attention projections, router, top-k experts,
# shared and dense FFNs, LM head) plus causal attention's 2 x 2 x (context / 2) x q width per layer
# on average. Decode bytes per token (batch 1): the active weights once. Peaks: bench_kernels'
# best F32 and BF16 matmul at that thread count; read bandwidth: its probe.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
shape=A
model=""
cores=$(nproc)
threads=""
tokens="128 512 1024 2048 4096"
prompt=128
ranks=""
decode=16
reps=3
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    --shape) shape="$2"; shift 2 ;;
    --model) model="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    --tokens) tokens="$2"; shift 2 ;;
    --prompt) prompt="$2"; shift 2 ;;
    --ranks) ranks="$2"; shift 2 ;;
    --decode) decode="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-scale.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
bk="$root/build/bench/bench_kernels"
[ -x "$sy" ] && [ -x "$bk" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
py=/usr/bin/python3
if [ -z "$threads" ]; then
  threads=""
  for t in 1 2 4 8 16 32 64 128; do [ "$t" -le "$cores" ] && threads="$threads $t"; done
fi
if [ -z "$ranks" ]; then
  ranks=""
  for r in 2 4 8 16; do [ "$r" -le "$cores" ] && ranks="$ranks $r"; done
fi
[ "$ranks" = 1 ] && ranks=""
for n in $tokens; do
  [ $((n % prompt)) -eq 0 ] || { echo "bench-scale.sh: --tokens $n is not a multiple of --prompt $prompt" >&2; exit 2; }
done
out="${out:-$root/bench/results/scale_$(hostname -s).md}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# Peaks, measured now.
all_threads="$threads"
for r in $ranks; do all_threads="$all_threads $((cores / r))"; done
all_threads=$(tr ' ' '\n' <<<"$all_threads $cores" | grep -v '^$' | sort -n | uniq | tr '\n' ' ')
echo "scale: GEMM peak and read bandwidth at threads $all_threads..." >&2
# shellcheck disable=SC2086
"$bk" --sections matmul --threads $all_threads --reps 5 --json "$work/peak.json" >/dev/null

label="$model"
if [ -z "$model" ]; then
  label="reference shape $shape (make-tiny, BF16)"
  model="$work/model"
  "$sy" make-tiny --out "$model" --reference-shape "$shape" >/dev/null
fi

runs="$work/runs.tsv"
: >"$runs"
run() {  # label ranks threads seqs -> one line of runs.tsv
  local ranks="$1" t="$2" seqs="$3" json="$work/b.json"
  local cmd=("$sy" bench -m "$model" --threads "$t" --prompt "$prompt" --decode "$decode" --reps "$reps")
  if [ "$ranks" -gt 1 ]; then
    mpirun --oversubscribe --allow-run-as-root -np "$ranks" "${cmd[@]}" --batch $((seqs / ranks)) \
      --json "$json" >/dev/null 2>"$work/err" || { echo "bench failed: $(tail -3 "$work/err")" >&2; exit 1; }
  else
    "${cmd[@]}" --batch "$seqs" --json "$json" >/dev/null 2>"$work/err" ||
      { echo "bench failed: $(tail -3 "$work/err")" >&2; exit 1; }
  fi
  printf '%s\t%s\t%s\t%s\n' "$ranks" "$t" "$((seqs * prompt))" "$(tr -d '\n' <"$json")" >>"$runs"
}
for t in $threads; do
  for n in $tokens; do
    echo "scale: 1 process, $t threads, $n tokens per forward..." >&2
    run 1 "$t" $((n / prompt))
  done
done
for r in $ranks; do
  for n in $tokens; do
    seqs=$((n / prompt))
    [ $((seqs % r)) -eq 0 ] || continue
    echo "scale: $r ranks x $((cores / r)) threads, $n tokens per forward..." >&2
    run "$r" $((cores / r)) "$seqs"
  done
done

"$py" - "$model/config.json" "$work/peak.json" "$runs" "$out" "$prompt" "$decode" "$reps" \
  "$cores" "$label" <<'PY'
import datetime, json, platform, socket, sys
cfg_path, peak_path, runs_path, out, prompt, decode, reps, cores, label = sys.argv[1:]
prompt, cores = int(prompt), int(cores)
c = json.load(open(cfg_path))
H = c.get("hidden_size") or c["d_model"]
L = c.get("num_hidden_layers") or c["n_layers"]
nh = c.get("num_attention_heads") or c["n_heads"]
nkv = c.get("num_key_value_heads", nh)
hd = c.get("head_dim") or H // nh
V = c["vocab_size"]
E = c.get("num_local_experts") or c.get("num_experts") or c.get("n_routed_experts")
K = c.get("num_experts_per_tok", 2)
I = c.get("moe_intermediate_size") or c["intermediate_size"]
bytes_per = {"bfloat16": 2, "float16": 2, "float32": 4}.get(c.get("torch_dtype", c.get("dtype")), 2)
attn = H * (nh * hd + 2 * nkv * hd) + nh * hd * H
macs = L * (attn + E * H + K * 3 * H * I) + V * H  # per token; embedding lookup excluded
def flops_per_token(context):  # causal attention: keys 0..s, s averaging context / 2
    return 2 * macs + L * 2 * 2 * (context / 2) * nh * hd
pk = json.load(open(peak_path))
peak = {}
for m in pk["matmul"]:
    t = m["threads"]
    best = max(m.get("gflops_F32", 0), m.get("gflops_cblas_f32", 0))
    p = peak.setdefault(t, {"f32": 0, "bf16": 0})
    p["f32"] = max(p["f32"], best)
    p["bf16"] = max(p["bf16"], m.get("gflops_BF16", 0))
probe = {p["threads"]: max(p["before_gbps"], p["after_gbps"]) for p in pk["probe"]}
rows = []
for line in open(runs_path):
    ranks, t, n, js = line.rstrip("\n").split("\t", 3)
    ranks, t, n, j = int(ranks), int(t), int(n), json.loads(js)
    rows.append((ranks, t, n, j))
L_ = []
L_.append(f"# Throughput at scale on {socket.gethostname()} ({cores} cores)")
L_.append("")
L_.append(f"Made by `scripts/bench-scale.sh` ({datetime.date.today()}), {platform.machine()}; model: "
          f"{label} ({L} layers, hidden {H}, {E} experts top-{K} x {I}, {bytes_per * 8}-bit weights).")
L_.append(f"Prompt {prompt} tokens per sequence; tokens per forward = prompt x sequences (all ranks); "
          f"decode {decode} steps; medians of {reps} repetitions.")
L_.append("GEMM peak: bench_kernels' best F32 matmul (Switchyard's or OpenBLAS's) at the same thread "
          "count, in this run; BF16 weights are widened to F32 for prefill today, so F32 is the peak "
          "that applies. Its shapes have at most 512 rows and OpenBLAS runs larger ones faster, so "
          "the peak is a floor and a figure above 100% is possible. Read bandwidth: its probe. "
          "Expert-parallel rows use ranks x threads = the cores and compare with the peak at all cores.")
L_.append("")
L_.append("| ranks x threads | tokens / forward | prefill tok/s | prefill GFLOP/s | % of F32 GEMM peak "
          "| MoE / attention / dense share of prefill | decode tok/s (all sequences) | decode GB/s (batch 1) "
          "| % of read probe |")
L_.append("|---|---:|---:|---:|---:|---|---:|---:|---:|")
for ranks, t, n, j in rows:
    total_threads = ranks * t
    pf = j["prefill_tokens_per_s"]
    gf = pf * flops_per_token(prompt) / 1e9
    pe = peak.get(total_threads, {}).get("f32") or peak.get(t, {}).get("f32", 0) * ranks
    ph = j.get("prefill_phase_s", {})
    tot = sum(ph.values()) or 1
    share = " / ".join(f"{100 * ph.get(k, 0) / tot:.0f}%" for k in ("moe fwd", "attention fwd", "dense ffn fwd"))
    dec = j["decode_tokens_per_s"]
    gbs, pct = "", ""
    if n == prompt and ranks == 1:  # one sequence: every step reads the active weights once
        gb = dec * (macs * bytes_per) / 1e9
        gbs = f"{gb:.1f}"
        if probe.get(t):
            pct = f"{100 * gb / probe[t]:.0f}%"
    L_.append(f"| {ranks} x {t} | {n} | {pf:.0f} | {gf:.0f} | {100 * gf / pe:.0f}% | {share} | {dec:.1f} "
              f"| {gbs} | {pct} |")
L_.append("")
L_.append("Peaks measured in this run:")
L_.append("")
L_.append("| threads | F32 GEMM GFLOP/s | BF16-weight GEMM GFLOP/s | read probe GB/s |")
L_.append("|---:|---:|---:|---:|")
for t in sorted(peak):
    L_.append(f"| {t} | {peak[t]['f32']:.0f} | {peak[t]['bf16']:.0f} | {probe.get(t, 0):.1f} |")
open(out, "w").write("\n".join(L_) + "\n")
print(f"wrote {out}")
PY
