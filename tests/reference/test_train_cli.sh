#!/usr/bin/env bash
# `switchyard train` end to end on a small model of the King James corpus:
#   - the run writes a loadable checkpoint (generate reads it as is), a JSON-lines log whose
#     loss falls, validation entries, and an SVG plot;
#   - interrupted at step 10 (--stop-at) and resumed, it reproduces the uninterrupted run's
#     log and final weights exactly (same thread count);
#   - under mpirun with 2 ranks (expert parallel and data parallel) and 4 ranks (expert
#     parallel), the loss curve and final weights equal the single-process run's to float
#     tolerance (compare_runs below);
#   - fault tolerance: the 2-rank checkpoint holds every rank's AdamW state (checked by an
#     independent reader: sizes, CRC-32s, non-zero moments); rank 1 SIGKILLed at a random step under
#     `supervise` resumes to the uninterrupted run exactly; a 2-rank checkpoint resumes with 1
#     and 4 ranks; PEC K=1 with a fault reports lost tokens; a corrupt shard is refused;
#   - bad input: an existing run without --resume, --resume without a checkpoint, a missing
#     corpus file, more ranks than experts, an unknown --parallel, a batch smaller than the
#     rank count -- each a clear error, no crash, no half-written checkpoint.
# Usage: test_train_cli.sh SWITCHYARD_BINARY WORK_DIR
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
rm -rf "$work" && mkdir -p "$work"
"$py" -c "import numpy" 2>/dev/null || { echo "SKIP: $py cannot import numpy"; exit 77; }
command -v mpirun >/dev/null || { echo "SKIP: mpirun not found"; exit 77; }
export SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1
mpi=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root)
failures=0
pass() { echo "PASS [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }

F=(--batch 4 --seq 64 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --expert-ffn 64 --experts 4
   --vocab 512 --eval-every 10 --eval-batches 2 --log-every 5 --warmup 3 --threads 1 --steps 20
   --save-every 10)

# ---- a single-process run
if "$sy" train --out "$work/a" "${F[@]}" >"$work/a.out" 2>&1; then pass "train" "$(tail -4 "$work/a.out" | head -1)"
else fail "train" "$(tail -5 "$work/a.out")"; fi
for f in model/config.json model/tokenizer.json model/model.safetensors.index.json \
         model/trainer_state.json train_log.jsonl loss.svg; do
  [ -s "$work/a/$f" ] || fail "outputs" "missing $f"
done
ls -d "$work"/a/model.* 2>/dev/null | grep -q . && fail "outputs" "temporary checkpoint dirs left: $(ls -d "$work"/a/model.*)"
grep -q "<svg" "$work/a/loss.svg" && grep -q "validation" "$work/a/loss.svg" || fail "plot" "loss.svg lacks the svg / validation series"
"$py" "$here/train_cli_checks.py" log "$work/a/train_log.jsonl" && pass "log" "loss falls, validation logged" || fail "log" "see above"
if out=$("$sy" generate --model "$work/a/model" --prompt "In the beginning" --max-tokens 8 2>&1); then
  pass "generate loads the checkpoint" "$(head -c 120 <<<"$out" | tr '\n' ' ')"
else fail "generate loads the checkpoint" "$out"; fi

# ---- interrupted + resumed == uninterrupted
"$sy" train --out "$work/b" "${F[@]}" --stop-at 10 >/dev/null 2>&1 || fail "stop-at" "exit $?"
"$sy" train --out "$work/b" "${F[@]}" --resume >"$work/b.out" 2>&1 || fail "resume" "$(tail -3 "$work/b.out")"
compare_runs() {  # NAME DIR_A DIR_B TOL: same steps; losses and final weights within TOL
  "$py" "$here/train_cli_checks.py" compare-runs "$2" "$3" "$4"
}
if msg=$(compare_runs resume "$work/a" "$work/b" 0); then pass "resume == uninterrupted (exact)" "$msg"
else fail "resume == uninterrupted (exact)" "$msg"; fi

# ---- MPI: data + expert parallel
for spec in "2 ep" "2 dp" "4 ep"; do
  read -r np mode <<<"$spec"
  d="$work/mpi_${np}_$mode"
  if "${mpi[@]}" -np "$np" "$sy" train --out "$d" "${F[@]}" --parallel "$mode" >"$d.out" 2>&1; then
    if msg=$(compare_runs "mpi" "$work/a" "$d" 2e-4); then pass "mpirun -np $np --parallel $mode == 1 process" "$msg"
    else fail "mpirun -np $np --parallel $mode == 1 process" "$msg"; fi
  else fail "mpirun -np $np --parallel $mode" "$(tail -5 "$d.out")"; fi
done

# ---- ScMoE under expert parallelism (two MoE layers in flight at once: Pos-3, MoE in every
# layer after the first). Overlapped exchanges (non-blocking, progressed while the window's other
# operators compute, forward and backward) give exactly the blocking run's numbers; against one
# process the tolerance is looser because top-1 routing near-ties can flip under the reordered
# sums of data parallelism.
S=(--batch 4 --seq 64 --hidden 64 --layers 4 --heads 4 --kv-heads 2 --expert-ffn 64 --experts 4
   --vocab 512 --eval-every 10 --eval-batches 2 --log-every 5 --warmup 3 --threads 1 --steps 10
   --family scmoe --scmoe-shortcut pos3 --scmoe-combine cg2 --sparse-step 1 --dense-layers 1)
"$sy" train --out "$work/sc1" "${S[@]}" >"$work/sc1.out" 2>&1 || fail "scmoe train" "$(tail -3 "$work/sc1.out")"
for np in 2 4; do
  "${mpi[@]}" -np "$np" "$sy" train --out "$work/sc_b$np" "${S[@]}" --parallel ep --ep-link-gbps 1 \
    >"$work/sc_b$np.out" 2>&1 || fail "scmoe ep $np" "$(tail -3 "$work/sc_b$np.out")"
  "${mpi[@]}" -np "$np" "$sy" train --out "$work/sc_o$np" "${S[@]}" --parallel ep --ep-overlap \
    --ep-link-gbps 1 >"$work/sc_o$np.out" 2>&1 || fail "scmoe ep $np overlap" "$(tail -3 "$work/sc_o$np.out")"
  hidden=$(grep -o "exposed ([0-9]*% hidden" "$work/sc_o$np.out" | head -1)
  if msg=$(compare_runs "scmoe" "$work/sc_b$np" "$work/sc_o$np" 0); then
    pass "scmoe: $np ranks, overlapped == blocking (exact)" "$msg; $hidden"
  else fail "scmoe: $np ranks, overlapped == blocking (exact)" "$msg"; fi
  grep -q "expert exchanges, rank $((np - 1))" "$work/sc_o$np.out" || fail "scmoe exchange report" "no per-rank line"
done
if msg=$(compare_runs "scmoe" "$work/sc1" "$work/sc_b2" 2e-3); then pass "scmoe: 2 ranks == 1 process" "$msg"
else fail "scmoe: 2 ranks == 1 process" "$msg"; fi

# ---- fault tolerance: sharded checkpoints hold every rank's optimizer state; a rank killed
# mid-run (SIGKILL) and restarted by `supervise` reproduces the uninterrupted run exactly when
# every expert is saved; a checkpoint resumes under another rank count; PEC loses tokens
M=(--batch 4 --seq 64 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --expert-ffn 64 --experts 4
   --vocab 512 --eval-every 10 --eval-batches 2 --log-every 5 --warmup 3 --threads 1 --steps 20
   --save-every 5)
d="$work/mpi_2_ep"
if msg=$("$py" "$here/train_cli_checks.py" checkpoint "$d/model"); then pass "sharded checkpoint (2 ranks)" "$msg"
else fail "sharded checkpoint (2 ranks)" "$msg"; fi
"${mpi[@]}" -np 2 "$sy" train --out "$work/ft_ref" "${M[@]}" >"$work/ft_ref.out" 2>&1 || fail "fault-free run" "$(tail -3 "$work/ft_ref.out")"
kill_step=$((2 + RANDOM % 18))  # a random step of 2..19 (printed with the result)
if timeout 300 "$sy" supervise --delay 0 --max-restarts 2 -- "${mpi[@]}" -np 2 "$sy" train --out "$work/ft_kill" \
     "${M[@]}" --auto-resume --fail-at-step "$kill_step" --fail-rank 1 >"$work/ft_kill.out" 2>&1 &&
   grep -q "restart 1 of 2" "$work/ft_kill.out" && [ -e "$work/ft_kill/faults/step-$kill_step-rank-1" ]; then
  if msg=$(compare_runs ft "$work/ft_ref" "$work/ft_kill" 0); then pass "rank 1 killed at step $kill_step, restarted == uninterrupted (exact)" "$msg"
  else fail "rank 1 killed at step $kill_step, restarted == uninterrupted (exact)" "$msg"; fi
else fail "kill + supervise" "$(tail -5 "$work/ft_kill.out")"; fi
for np in 1 4; do  # a 2-rank checkpoint resumed by another rank count
  rm -rf "$work/ft_np$np"
  "${mpi[@]}" -np 2 "$sy" train --out "$work/ft_np$np" "${M[@]}" --stop-at 10 >/dev/null 2>&1 || fail "stop-at (2 ranks)" "exit $?"
  "${mpi[@]}" -np "$np" "$sy" train --out "$work/ft_np$np" "${M[@]}" --resume >"$work/ft_np$np.out" 2>&1 ||
    fail "resume with $np ranks" "$(tail -3 "$work/ft_np$np.out")"
  if msg=$(compare_runs ft "$work/ft_ref" "$work/ft_np$np" 2e-4); then pass "2 ranks to step 10, then $np == uninterrupted" "$msg"
  else fail "2 ranks to step 10, then $np == uninterrupted" "$msg"; fi
done
"$sy" supervise --delay 0 -- "$sy" train --out "$work/ft_pec" "${M[@]}" --auto-resume --pec-k 1 --fail-at-step 13 \
  >"$work/ft_pec.out" 2>&1 || fail "PEC run with a fault" "$(tail -3 "$work/ft_pec.out")"
if grep -q "recovery: experts restored from older checkpoints lost" "$work/ft_pec.out" &&
   msg=$("$py" "$here/train_cli_checks.py" checkpoint "$work/ft_pec/model" --min-plt 0.001); then
  pass "PEC K=1: a fault loses tokens (PLT > 0), the checkpoint stays consistent" "$msg"
else fail "PEC K=1 with a fault" "$(grep -E "recovery|error" "$work/ft_pec.out") ${msg:-}"; fi
# Two-level: K_persist 1 to storage, every expert to node memory, written asynchronously. Rank 1
# killed, its node kept: every expert comes back from node memory, PLT 0, and the run equals the
# uninterrupted one exactly. With the node lost too: rank 1's experts come from storage, PLT > 0.
snapdir="$work/node_memory" && mkdir -p "$snapdir"
TL=(--pec-k 1 --snapshot-k 4 --async-checkpoint --snapshot-dir "$snapdir" --auto-resume --fail-at-step 13 --fail-rank 1)
timeout 300 "$sy" supervise --delay 0 -- "${mpi[@]}" -np 2 "$sy" train --out "$work/ft_2l" "${M[@]}" "${TL[@]}" \
  >"$work/ft_2l.out" 2>&1 || fail "two-level run" "$(tail -3 "$work/ft_2l.out")"
if grep -q "6 experts restored from node-local snapshots" "$work/ft_2l.out" &&
   ! grep -q "lost .* token-slots" "$work/ft_2l.out" &&
   msg=$(compare_runs ft "$work/ft_ref" "$work/ft_2l" 0); then
  pass "two-level: node kept, 6 experts from node memory (2 persisted at that step), == uninterrupted (exact)" "$msg"
else fail "two-level: node kept" "$(grep -E "recovery|error" "$work/ft_2l.out") ${msg:-}"; fi
[ -z "$(ls -A "$snapdir")" ] || fail "two-level" "node-local snapshots left after the run: $(ls "$snapdir")"
timeout 300 "$sy" supervise --delay 0 -- "${mpi[@]}" -np 2 "$sy" train --out "$work/ft_2l_lost" "${M[@]}" "${TL[@]}" \
  --fail-node-loss >"$work/ft_2l_lost.out" 2>&1 || fail "two-level run, node lost" "$(tail -3 "$work/ft_2l_lost.out")"
if grep -q "3 experts restored from node-local snapshots" "$work/ft_2l_lost.out" &&
   grep -q "lost .* token-slots" "$work/ft_2l_lost.out"; then
  pass "two-level: node lost, rank 0's experts from memory, rank 1's from storage" "$(grep recovery "$work/ft_2l_lost.out" | tr '\n' ' ')"
else fail "two-level: node lost" "$(grep -E "recovery|error" "$work/ft_2l_lost.out")"; fi

# A corrupt shard is found before anything loads.
shard=$(ls "$work/ft_ref/model"/w*-L0-E0.safetensors | head -1)
cp -r "$work/ft_ref" "$work/ft_bad" && printf 'X' | dd of="${shard/ft_ref/ft_bad}" bs=1 seek=200 conv=notrunc 2>/dev/null
EXPECT_TIMEOUT=120
source "$here/expect_error.sh"
expect "corrupt shard" "is corrupt" "CRC-32" -- "$sy" train --out "$work/ft_bad" "${M[@]}" --resume

# ---- aux-loss-free balancing: the selection-bias updates even out the expert load
A=(--batch 8 --seq 64 --hidden 64 --layers 2 --heads 4 --kv-heads 2 --expert-ffn 64 --experts 8
   --vocab 512 --eval-every 0 --eval-batches 1 --log-every 20 --warmup 10 --threads 1 --steps 100
   --save-every 0 --family dots1 --aux-coef 0)
"$sy" train --out "$work/alf0" "${A[@]}" --bias-update-rate 0 >/dev/null 2>&1 || fail "aux-free" "rate 0 run failed"
"$sy" train --out "$work/alf1" "${A[@]}" --bias-update-rate 0.01 >/dev/null 2>&1 || fail "aux-free" "rate 0.01 run failed"
if msg=$("$py" "$here/train_cli_checks.py" aux-free "$work/alf0" "$work/alf1"); then pass "aux-loss-free balancing" "$msg"; else fail "aux-loss-free balancing" "$msg"; fi

# ---- noisy top-k gating: W_noise is trained and saved; inference ignores it (no noise there)
if "$sy" train --out "$work/noisy" "${F[@]}" --noisy-gating >"$work/noisy.out" 2>&1 &&
   "$py" "$here/train_cli_checks.py" noisy "$work/noisy/model" &&
   "$sy" generate --model "$work/noisy/model" --prompt "And" -n 4 >/dev/null 2>&1; then
  pass "noisy gating" "trains W_noise (learned, non-zero), and generate loads the checkpoint"
else fail "noisy gating" "$(tail -3 "$work/noisy.out")"; fi

# ---- bad input
expect "existing run without --resume" "already holds a training checkpoint" "--resume" -- \
  "$sy" train --out "$work/a" "${F[@]}"
expect "--resume without a checkpoint" "$work/none/model holds no training checkpoint" -- "$sy" train --out "$work/none" "${F[@]}" --resume
expect "missing corpus" "no-such-corpus.txt" -- "$sy" train --out "$work/c" "${F[@]}" --corpus "$work/no-such-corpus.txt"
expect "more ranks than experts" "5 ranks for 4 experts" -- "${mpi[@]}" -np 5 "$sy" train --out "$work/d" "${F[@]}"
expect "unknown --parallel" "--parallel must be ep or dp" -- "$sy" train --out "$work/e" "${F[@]}" --parallel tp
expect "batch smaller than ranks" "--batch 1 is smaller than the 2 ranks" -- "${mpi[@]}" -np 2 "$sy" train --out "$work/f" "${F[@]:2}" --batch 1
expect "unknown flag" "--no-such-flag" -- "$sy" train --out "$work/g" --no-such-flag
expect "--pec-k beyond the experts" "--pec-k 9 exceeds the model's 4 experts" -- "$sy" train --out "$work/h" "${F[@]}" --pec-k 9
expect "--fail-rank outside the run" "--fail-rank 2 is not a rank of this run (0 to 1)" -- "${mpi[@]}" -np 2 "$sy" train --out "$work/i" "${F[@]}" --fail-at-step 3 --fail-rank 2
expect "unknown --pec-select" "--pec-select must be sequential or load-aware" -- "$sy" train --out "$work/j" "${F[@]}" --pec-select newest
expect "--snapshot-k with replicated experts" "--snapshot-k needs --parallel ep" -- "${mpi[@]}" -np 2 "$sy" train --out "$work/k" "${F[@]}" --parallel dp --snapshot-k 2
expect "supervise without a command" "command is required" -- "$sy" supervise
expect "supervise, command not found" "could not be started" -- "$sy" supervise -- "$work/no-such-program"
for d in c d e f g h i j k; do [ -e "$work/$d/model" ] && fail "no half-written checkpoint" "$work/$d/model exists"; done
exit $failures
