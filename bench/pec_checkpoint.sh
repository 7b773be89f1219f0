#!/usr/bin/env bash
# MoC-System / partial experts checkpointing (papers.md section 4) reproduced in kind: checkpoint
# size against the paper's formula, time each checkpoint blocks training (synchronous full save,
# PEC, asynchronous PEC, two-level), the Proportion of Lost Tokens against K and the checkpoint
# interval, and the final validation loss of KJV training runs with one real fault (SIGKILL,
# restarted by `switchyard supervise`) at K = 1, 2, 4 and full, against a run without a fault.
#
#   bench/pec_checkpoint.sh [--out FILE.md] [--steps N] [--fault-at S] [--quick]
#
# Model: Mixtral-style, 4 layers, hidden 128, 8 experts top-2 (expert FFN 256), KJV with a 2048
# BPE vocabulary, batch 8 x 128 -- expert state is about 86% of the checkpoint, as in the paper's
# GPT models. Sizes and blocking times come from 2 MPI ranks (expert parallel, one thread each,
# sharded checkpoints); the quality runs from one process with 2 threads. Storage is this
# machine's disk (fsync'd); "node-local memory" is /dev/shm. One machine stands for the cluster:
# a rank's snapshot directory stands for its node's memory. --quick: fewer steps (a smoke test).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
out="$root/bench/results/pec_checkpoint.md"
steps=600
fault_at=305
quick=0
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --steps) steps="$2"; shift 2 ;;
    --fault-at) fault_at="$2"; shift 2 ;;
    --quick) quick=1; steps=60; fault_at=33; shift ;;
    -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "pec_checkpoint.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
[[ "$steps" =~ ^[1-9][0-9]*$ && "$fault_at" =~ ^[1-9][0-9]*$ && "$fault_at" -lt "$steps" ]] ||
  { echo "pec_checkpoint.sh: need 0 < --fault-at < --steps" >&2; exit 2; }
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
work="$(mktemp -d "${TMPDIR:-/tmp}/pec_bench.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mpi=(mpirun --oversubscribe --allow-run-as-root)
model=(--batch 8 --seq 128 --hidden 128 --layers 4 --heads 4 --kv-heads 2 --expert-ffn 256
       --experts 8 --vocab 2048 --warmup 30 --log-every 50 --eval-batches 16)
N=8

median() { sort -g | awk '{a[NR] = $1} END {if (NR == 0) print "nan"; else print (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2}'; }
# Values of one key of the checkpoint entries of a log; "steady": PEC saves only (not the first,
# full one, nor the last of a session).
ckpt_values() {  # LOG KEY [steady]
  grep '"checkpoint"' "$1" | { if [ "${3:-}" = steady ]; then grep '"full":false' | tail -n +2; else cat; fi; } |
    grep -o "\"$2\":[0-9.e+-]*" | cut -d: -f2
}
final_val() { grep -o '"val_ce":[0-9.e+-]*' "$1/train_log.jsonl" | tail -1 | cut -d: -f2; }
plt_of() { grep -o '"plt": *[0-9.e+-]*' "$1/model/trainer_state.json" | head -1 | awk -F: '{print $2 + 0}'; }
progress() { echo "[pec_checkpoint] $*" >&2; }

# ---- 1 + 2: sizes and blocking time, 2 ranks, save every 5 steps
sz_steps=$([ "$quick" = 1 ] && echo 30 || echo 80)
run_ckpt() {  # NAME ARGS...: a 2-rank run; its log
  local name="$1"; shift
  progress "2 ranks: $name"
  "${mpi[@]}" -np 2 "$sy" train --out "$work/$name" "${model[@]}" --threads 1 --steps "$sz_steps" \
    --eval-every 0 "$@" >"$work/$name.out" 2>&1 || { tail -5 "$work/$name.out" >&2; exit 1; }
}
run_ckpt none --save-every 0
for k in 1 2 4 8; do run_ckpt "sync_k$k" --save-every 5 --pec-k "$k"; done
run_ckpt async_k1 --save-every 5 --pec-k 1 --async-checkpoint
mkdir -p "$work/shm"
run_ckpt twolevel_k1 --save-every 5 --pec-k 1 --snapshot-k 4 --async-checkpoint --snapshot-dir "$work/shm"
run_ckpt async_full --save-every 5 --async-checkpoint

full_bytes=$(ckpt_values "$work/sync_k8/train_log.jsonl" bytes | median)
# The formula's P_ne and P_e: parameter counts of the model's tensors (switchyard inspect).
read -r p_ne p_e < <("$sy" inspect --model "$work/sync_k8/model" --tensors |
  awk '/\[/ {n = 1; s = $0; gsub(/.*\[|\].*/, "", s); k = split(s, d, ", "); for (i = 1; i <= k; ++i) n *= d[i];
              if ($1 ~ /\.experts\./) e += n; else ne += n} END {print ne, e}')
elapsed() { grep -o '"elapsed_s":[0-9.e+-]*' "$1/train_log.jsonl" | tail -1 | cut -d: -f2; }
base_s=$(elapsed "$work/none")
step_ms=$(awk -v t="$base_s" -v n="$sz_steps" 'BEGIN {printf "%.1f", 1000 * t / n}')

{
  echo "# Partial experts checkpointing (MoC-System) on this machine"
  echo
  echo "Made by \`bench/pec_checkpoint.sh\` on $(date -u +%F), $(nproc) cores, $(git -C "$root" rev-parse --short HEAD)."
  echo "Model: Mixtral-style, 4 layers, hidden 128, 8 experts top-2 (expert FFN 256), 3.6 M parameters,"
  echo "batch 8 x 128 tokens of KJV. Storage is this machine's disk (every shard fsync'd); node-local"
  echo "memory is a tmpfs directory; the cluster is emulated by MPI ranks on one machine (a rank's"
  echo "snapshot directory stands for its node's memory)."
  echo
  echo "## Checkpoint size against C_pec = (P_ne + K/N * P_e)(B_w + B_o)"
  echo
  echo "2 ranks, expert parallel, sharded checkpoints; bytes of one PEC save (median of the saves"
  echo "after the first), all ranks, safetensors headers included. P_ne = $p_ne non-expert and"
  echo "P_e = $p_e expert parameters; B_w = 4, B_o = 8 bytes per parameter (F32 weights, AdamW m, v)."
  echo
  echo "| K of $N | bytes per save | formula | measured / formula | share of full |"
  echo "|---:|---:|---:|---:|---:|"
  for k in 1 2 4 8; do
    b=$(ckpt_values "$work/sync_k$k/train_log.jsonl" bytes steady | median)
    [ "$k" = 8 ] && b=$full_bytes
    awk -v k="$k" -v n="$N" -v b="$b" -v d="$p_ne" -v e="$p_e" -v f="$full_bytes" \
      'BEGIN {p = (d + k / n * e) * 12; printf "| %d | %d | %d | %.3f | %.1f%% |\n", k, b, p, b / p, 100 * b / f}'
  done
  echo
  echo "## Time a checkpoint blocks training"
  echo
  echo "Same runs, a checkpoint every 5 steps for $sz_steps steps; F&B (one step without"
  echo "checkpoints) is $step_ms ms. Blocking: wall time the training loop waited per save (median);"
  echo "write: time spent writing the shards (and snapshots), on a background thread when async;"
  echo "O_save model = max(0, write - F&B), the paper's overhead of an asynchronous save; run time:"
  echo "the whole run, against the run without checkpoints."
  echo
  echo "| mode | blocking / save (ms) | write / save (ms) | O_save model (ms) | run time vs none |"
  echo "|---|---:|---:|---:|---:|"
  for spec in "sync_k8:synchronous full" "sync_k1:synchronous PEC K=1" "async_full:asynchronous full" \
              "async_k1:asynchronous PEC K=1" "twolevel_k1:two-level K_persist=1, K_snapshot=4, async"; do
    name="${spec%%:*}"; label="${spec#*:}"
    blk=$(ckpt_values "$work/$name/train_log.jsonl" seconds steady | median)
    wr=$(ckpt_values "$work/$name/train_log.jsonl" write_seconds steady | median)
    t=$(elapsed "$work/$name")
    awk -v l="$label" -v b="$blk" -v w="$wr" -v s="$step_ms" -v t="$t" -v base="$base_s" \
      'BEGIN {o = 1000 * w - s; if (o < 0) o = 0;
              printf "| %s | %.1f | %.1f | %.1f | %.2fx |\n", l, 1000 * b, 1000 * w, o, t / base}'
  done
} >"$work/report.md"

# ---- 3: PLT against K and the checkpoint interval, one fault, one process
run_fault() {  # NAME K INTERVAL [STOP]
  local name="$1" k="$2" every="$3" stop="${4:-0}"
  progress "fault run: $name (K=$k, every $every steps)"
  "$sy" supervise --delay 0 --max-restarts 1 -- "$sy" train --out "$work/$name" "${model[@]}" --threads 2 \
    --steps "$steps" --eval-every 0 --save-every "$every" --pec-k "$k" --no-dynamic-k --auto-resume \
    --fail-at-step "$fault_at" --stop-at "$stop" >"$work/$name.out" 2>&1 ||
    { tail -5 "$work/$name.out" >&2; exit 1; }
}
intervals=$([ "$quick" = 1 ] && echo "5 10" || echo "5 10 20 40")
for k in 1 2 4; do
  for every in $intervals; do
    [ "$every" = 10 ] && continue  # the quality runs below cover it
    run_fault "plt_k${k}_i$every" "$k" "$every" "$((fault_at + 5))"
  done
done
# ---- 4: quality: the whole run, a fault at --fault-at, checkpoints every 10 steps
progress "quality run without a fault"
"$sy" train --out "$work/nofault" "${model[@]}" --threads 2 --steps "$steps" --eval-every 0 --save-every 10 \
  >"$work/nofault.out" 2>&1 || { tail -5 "$work/nofault.out" >&2; exit 1; }
for k in 1 2 4 8; do run_fault "q_k$k" "$k" 10; done

{
  cat "$work/report.md"
  echo
  echo "## Proportion of Lost Tokens against K and the checkpoint interval"
  echo
  echo "One process; SIGKILL at the end of step $fault_at of $steps, restarted by \`switchyard supervise\`"
  echo "from the latest checkpoint; dynamic K off. PLT = 1/N_moe * sum_i lost_i / (T_i * top_k), T_i"
  echo "the run's $steps x 1024 tokens."
  echo
  printf "| K \\\\ interval |"; for every in $intervals; do printf " %s steps |" "$every"; done; echo
  printf "|---|"; for every in $intervals; do printf -- "---:|"; done; echo
  for k in 1 2 4; do
    printf "| K = %s |" "$k"
    for every in $intervals; do
      d="$work/plt_k${k}_i$every"; [ "$every" = 10 ] && d="$work/q_k$k"
      awk -v p="$(plt_of "$d")" 'BEGIN {printf " %.2f%% |", 100 * p}'
    done
    echo
  done
  echo
  echo "## Final validation loss with one fault"
  echo
  echo "$steps steps, a checkpoint every 10 steps, SIGKILL at step $fault_at, validation cross-entropy"
  echo "(nats/token) on 16 held-out batches at the end."
  echo
  echo "| run | PLT | final validation CE | vs no fault |"
  echo "|---|---:|---:|---:|"
  v0=$(final_val "$work/nofault")
  awk -v v="$v0" 'BEGIN {printf "| no fault | 0 | %.4f | |\n", v}'
  for k in 8 4 2 1; do
    label="K = $k"; [ "$k" = 8 ] && label="full (K = 8)"
    awk -v l="$label" -v p="$(plt_of "$work/q_k$k")" -v v="$(final_val "$work/q_k$k")" -v v0="$v0" \
      'BEGIN {printf "| fault, %s | %.2f%% | %.4f | %+.4f |\n", l, 100 * p, v, v - v0}'
  done
} >"$out.tmp"
mv "$out.tmp" "$out"
progress "wrote $out"
