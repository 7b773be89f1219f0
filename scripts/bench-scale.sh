#!/usr/bin/env bash
# Throughput at scale (issue 21): prefill and decode over threads x tokens per forward x ranks on
# whatever machine this runs on, as one table with GFLOP/s against the GEMM peak and GB/s
# against the read bandwidth, both measured by bench_kernels in the same run.
#
#   scripts/bench-scale.sh [--shape A|B] [--model DIR] [--threads "1 2 ..."] [--tokens "128 ..."]
#                          [--prompt P] [--ranks "1 2 ..."] [--paths "bf16 f32"] [--decode D]
#                          [--reps R] [--out FILE.md]
#
# --shape     the reference shape of machine.md to build with make-tiny (default A; BF16)
# --model     benchmark this checkpoint instead
# --threads   thread counts for one process (default: 1 2 4 8 16 ... up to the cores)
# --tokens    tokens per forward call = prompt x sequences (default 128 512 1024 2048 4096)
# --prompt    prompt tokens per sequence (default 128); sequences = tokens / prompt
# --ranks     expert-parallel rank counts under mpirun, each with cores / ranks threads and the
#             same sequences in all (default: 2 4 ... up to the cores; 1 = skip)
# --paths     arithmetic for BF16 weights: bf16 (AVX512_BF16 dot products, the default where the
#             CPU has them) and / or f32 (SY_BF16_DOT=0: widened to float32); default both where
#             the CPU has AVX512_BF16, else f32
# --decode    decode steps per sequence (default 16); --reps timed repetitions (default 3, median)
# --out       the markdown table (default bench/results/scale_<host>.md)
#
# FLOPs per token: 2 x the active multiply-adds (attention projections, router, top-k experts,
# shared and dense FFNs, LM head) plus causal attention's 2 x 2 x (context / 2) x q width per layer
# on average. Decode bytes per token (batch 1): the active weights once. Peaks, from bench_kernels
# in the same run: the arithmetic peak of the path's instruction (FMA for f32, vdpbf16ps for
# bf16; register-only loops, a ceiling no GEMM reaches) and the best GEMM it measured; read
# bandwidth: its probe.
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
paths=""
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
    --paths) paths="$2"; shift 2 ;;
    --reps) reps="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
if [ -z "$paths" ]; then
  paths=f32
  grep -qw avx512_bf16 /proc/cpuinfo && paths="bf16 f32"
fi
for p in $paths; do
  case "$p" in bf16|f32) ;; *) echo "bench-scale.sh: --paths takes bf16 and / or f32, got '$p'" >&2; exit 2 ;; esac
done
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
run() {  # path ranks threads seqs -> one line of runs.tsv
  local path="$1" ranks="$2" t="$3" seqs="$4" json="$work/b.json" dot=1
  [ "$path" = f32 ] && dot=0
  local cmd=(env "SY_BF16_DOT=$dot" "$sy" bench -m "$model" --threads "$t" --prompt "$prompt" --decode "$decode" --reps "$reps")
  if [ "$ranks" -gt 1 ]; then
    mpirun --oversubscribe --allow-run-as-root -np "$ranks" "${cmd[@]}" --batch $((seqs / ranks)) \
      --json "$json" >/dev/null 2>"$work/err" || { echo "bench failed: $(tail -3 "$work/err")" >&2; exit 1; }
  else
    "${cmd[@]}" --batch "$seqs" --json "$json" >/dev/null 2>"$work/err" ||
      { echo "bench failed: $(tail -3 "$work/err")" >&2; exit 1; }
  fi
  printf '%s\t%s\t%s\t%s\t%s\n' "$path" "$ranks" "$t" "$((seqs * prompt))" "$(tr -d '\n' <"$json")" >>"$runs"
}
for path in $paths; do
  for t in $threads; do
    for n in $tokens; do
      echo "scale: $path, 1 process, $t threads, $n tokens per forward..." >&2
      run "$path" 1 "$t" $((n / prompt))
    done
  done
  for r in $ranks; do
    for n in $tokens; do
      seqs=$((n / prompt))
      [ $((seqs % r)) -eq 0 ] || continue
      echo "scale: $path, $r ranks x $((cores / r)) threads, $n tokens per forward..." >&2
      run "$path" "$r" $((cores / r)) "$seqs"
    done
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
peak = {}  # threads -> best GEMM per path, and the arithmetic peaks
for m in pk["matmul"]:
    t = m["threads"]
    p = peak.setdefault(t, {"f32": 0, "bf16": 0, "arith_f32": 0, "arith_bf16": 0})
    p["f32"] = max(p["f32"], m.get("gflops_F32", 0), m.get("gflops_cblas_f32", 0),
                   m.get("gflops_BF16_f32_path", 0))
    p["bf16"] = max(p["bf16"], m.get("gflops_BF16", 0))
for a in pk.get("arith_peak", []):
    p = peak.setdefault(a["threads"], {"f32": 0, "bf16": 0, "arith_f32": 0, "arith_bf16": 0})
    p["arith_f32"], p["arith_bf16"] = a["f32_gflops"], a["bf16_gflops"]
def peak_at(total, per_rank, ranks, key):
    return peak.get(total, {}).get(key) or peak.get(per_rank, {}).get(key, 0) * ranks
probe = {p["threads"]: max(p["before_gbps"], p["after_gbps"]) for p in pk["probe"]}
rows = []
for line in open(runs_path):
    path, ranks, t, n, js = line.rstrip("\n").split("\t", 4)
    ranks, t, n, j = int(ranks), int(t), int(n), json.loads(js)
    rows.append((path, ranks, t, n, j))
L_ = []
L_.append(f"# Throughput at scale on {socket.gethostname()} ({cores} cores)")
L_.append("")
L_.append(f"Made by `scripts/bench-scale.sh` ({datetime.date.today()}), {platform.machine()}; model: "
          f"{label} ({L} layers, hidden {H}, {E} experts top-{K} x {I}, {bytes_per * 8}-bit weights).")
L_.append(f"Prompt {prompt} tokens per sequence; tokens per forward = prompt x sequences (all ranks); "
          f"decode {decode} steps; medians of {reps} repetitions.")
L_.append("Path: the arithmetic for the BF16 weights: `bf16` = AVX512_BF16 dot products on BF16-rounded "
          "activations (the default where the CPU has them), `f32` = `SY_BF16_DOT=0`, weights widened to "
          "float32. Attention scores, norms and routing are float32 on both. Peaks, measured by bench_kernels "
          "in this run at the same thread count: **arith** = the path's instruction throughput on registers "
          "(FMA for f32, vdpbf16ps for bf16), a ceiling no GEMM reaches; **GEMM** = the best matmul it "
          "measured on the path (f32: Switchyard's, OpenBLAS's or the widening path's; bf16: Switchyard's "
          "kernel), at most 2048 rows. Read bandwidth: its probe. Expert-parallel rows use ranks x "
          "threads = the cores and compare with the peaks at all cores.")
L_.append("")
L_.append("| path | ranks x threads | tokens / forward | prefill tok/s | prefill GFLOP/s | % of arith peak "
          "| % of GEMM peak | MoE / attention / dense share of prefill | decode tok/s (all sequences) "
          "| decode GB/s (batch 1) | % of read probe |")
L_.append("|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|")
for path, ranks, t, n, j in rows:
    total_threads = ranks * t
    pf = j["prefill_tokens_per_s"]
    gf = pf * flops_per_token(prompt) / 1e9
    pa = peak_at(total_threads, t, ranks, "arith_" + path)
    pe = peak_at(total_threads, t, ranks, path)
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
    pct_a = f"{100 * gf / pa:.0f}%" if pa else ""
    pct_e = f"{100 * gf / pe:.0f}%" if pe else ""
    L_.append(f"| {path} | {ranks} x {t} | {n} | {pf:.0f} | {gf:.0f} | {pct_a} | {pct_e} | {share} "
              f"| {dec:.1f} | {gbs} | {pct} |")
L_.append("")
L_.append("Peaks measured in this run:")
L_.append("")
L_.append("| threads | f32 arith (FMA) GFLOP/s | f32 GEMM GFLOP/s | bf16 arith (vdpbf16ps) GFLOP/s "
          "| bf16 GEMM GFLOP/s | read probe GB/s |")
L_.append("|---:|---:|---:|---:|---:|---:|")
for t in sorted(peak):
    q = peak[t]
    L_.append(f"| {t} | {q['arith_f32']:.0f} | {q['f32']:.0f} | {q['arith_bf16']:.0f} | {q['bf16']:.0f} "
              f"| {probe.get(t, 0):.1f} |")
open(out, "w").write("\n".join(L_) + "\n")
print(f"wrote {out}")
PY
