#!/usr/bin/env bash
# Mistakes a careless or unlucky user makes end cleanly, with a message naming what was wrong,
# and never damage what was there: outputs that are not regular files are written in place
# (a FIFO stays a FIFO), write errors on stdout fail the run, interrupted checkpoint saves are
# recovered before anything else, memory is not taken up front from a flag, and numbers that
# make no sense are refused. Usage: test_user_mistakes.sh SWITCHYARD_BINARY WORK_DIR
set -uo pipefail
sy="$1"
work="$2"
rm -rf "$work" && mkdir -p "$work"
export SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1
failures=0
pass() { echo "PASS [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }
source "$(dirname "$0")/expect_error.sh"

m="$work/m"
"$sy" make-tiny --out "$m" --tokenizer byte_level >/dev/null || exit 1
q=(score -m "$m" --threads 1 --quiet)

# ---- outputs that are not regular files
mkfifo "$work/fifo"
(timeout 30 head -c 6 "$work/fifo" >"$work/fifo.head") &
reader=$!
timeout 60 "$sy" "${q[@]}" --text "hello world" --dump-logits "$work/fifo" >/dev/null 2>&1
rc=$?
wait $reader
if [ $rc -eq 0 ] && [ -p "$work/fifo" ] && [ "$(tail -c 5 "$work/fifo.head")" = "NUMPY" ]; then
  pass "fifo output" "the logits went through the FIFO, which is still a FIFO"
else
  fail "fifo output" "exit $rc, fifo $(stat -c %F "$work/fifo"), read '$(cat -v "$work/fifo.head")'"
fi
echo old >"$work/target.json" && ln -s target.json "$work/link.json"
"$sy" "${q[@]}" --text "hello" --load-json "$work/link.json" >/dev/null 2>&1
if [ -L "$work/link.json" ] && grep -q '"layers"' "$work/target.json"; then
  pass "symlink output" "the link still points at the file it named, which holds the output"
else
  fail "symlink output" "link $(stat -c %F "$work/link.json"), target: $(head -c 80 "$work/target.json")"
fi
expect "stdout on a full device" "cannot write to standard output" -- \
  bash -c "'$sy' score -m '$m' --threads 1 --text 'hello world' >/dev/full"
expect "output path is a directory" "is a directory" -- \
  "$sy" "${q[@]}" --text "hello" --dump-logits "$work"

# ---- memory from flags, contexts past the model
expect "generate -n past the context" "max_position_embeddings" "lower --max-tokens" -- \
  "$sy" generate -m "$m" --threads 1 --prompt "hi" -n 10000000
out=$(timeout 60 "$sy" "${q[@]}" --text "hello world" --window 2000000000 2>&1) \
  && pass "--window 2e9 on a short text" "$(grep -o 'tokens [0-9]*  scored [0-9]*' <<<"$out")" \
  || fail "--window 2e9 on a short text" "$out"
ids=$(seq -s, 1 5000 | awk -F, '{for (i = 1; i <= NF; i++) printf "%s%d", (i > 1 ? "," : ""), $i % 300}')
out=$(timeout 120 "$sy" "${q[@]}" --ids "$ids" --window 0 2>&1)
if grep -q "tokens 5000  scored 4998" <<<"$out"; then  # two windows: 4096 + 904 positions
  pass "--window 0 on a long text" "cut at max_position_embeddings (4096): two windows"
else
  fail "--window 0 on a long text" "$(tail -2 <<<"$out")"
fi
expect "--threads 100000" "--threads 100000 is more than 1024" -- \
  "$sy" score -m "$m" --text "hello" --threads 100000

# ---- numbers that make no sense
out=$(timeout 60 "$sy" score -m "$m" --threads 1 --text "hello world, hello again" \
  --capacity-policy score --capacity-factor 1e300 2>&1)
if grep -q "pairs dropped 0.00%" <<<"$out"; then
  pass "--capacity-factor 1e300" "no pair dropped (capacity clamps at the token count)"
else
  fail "--capacity-factor 1e300" "$(grep -o 'pairs dropped [0-9.]*%' <<<"$out")"
fi
expect "--sweep-factors inf" "--sweep-factors must be positive finite numbers" -- \
  "$sy" "${q[@]}" --text "hello" --sweep score --sweep-factors 1,inf
expect "--temperature nan" "--temperature" "finite" -- \
  "$sy" generate -m "$m" --prompt "hi" --temperature nan
expect "--top-p nan" "--top-p" "finite" -- "$sy" generate -m "$m" --prompt "hi" --top-p nan
d="$work/neg_head_dim" && cp -r "$m" "$d" && sed -i 's/"head_dim": [0-9]*/"head_dim": -16/' "$d/config.json"
expect "negative head_dim" "head_dim -16" -- "$sy" inspect -m "$d"
d="$work/tok_1e400" && cp -r "$m" "$d"
/usr/bin/python3 - "$d/tokenizer.json" <<'PY'
import sys
p = sys.argv[1]
s = open(p).read().replace('"dropout": null', '"dropout": 1e400', 1)
open(p, "w").write(s)
PY
expect "tokenizer number 1e400" "tokenizer.json" "number overflow" -- "$sy" score -m "$d" --text "hi"

# ---- output folders that cannot be
expect "make-tiny --out /dev/null" "--out /dev/null: exists and is not a directory" -- \
  "$sy" make-tiny --out /dev/null
expect "make-tiny --out under /proc" "--out /proc/sy-test/x: cannot create the directory" -- \
  "$sy" make-tiny --out /proc/sy-test/x
expect "train --out a file" "exists and is not a directory" -- \
  "$sy" train --out "$work/target.json" --steps 1

# ---- inputs
printf 'In the beginning was a long prompt.' >"$work/prompt.txt"
out=$(timeout 60 "$sy" generate -m "$m" --threads 1 --file "$work/prompt.txt" -n 3 2>&1) \
  && pass "generate --file" "$(head -c 80 <<<"$out" | tr '\n' ' ')" || fail "generate --file" "$out"
expect "score -f DIR" "is a directory" -- "$sy" "${q[@]}" -f "$work"
expect "generate -f DIR" "is a directory" -- "$sy" generate -m "$m" -f "$work"

# ---- checkpoints: recovery comes first, saves follow --save-every, nothing left in /tmp
for i in $(seq 1 40); do echo "And it came to pass in those days, that there went out a decree number $i."; done >"$work/corpus.txt"
T=(--corpus "$work/corpus.txt" --vocab 300 --hidden 32 --layers 1 --heads 2 --kv-heads 1
   --experts 4 --expert-ffn 32 --batch 2 --seq 16 --threads 1 --eval-every 0 --eval-batches 1
   --warmup 1)
"$sy" train --out "$work/run" "${T[@]}" --steps 4 --save-every 2 >"$work/run.out" 2>&1 \
  || fail "train" "$(tail -3 "$work/run.out")"
mv "$work/run/model" "$work/run/model.old-4194302"  # killed between the two renames of a save
expect "a new run does not overwrite the recovered checkpoint" "already holds a training checkpoint" -- \
  "$sy" train --out "$work/run" "${T[@]}" --steps 6
if [ -f "$work/run/model/trainer_state.json" ] && [ ! -e "$work/run/model.old-4194302" ]; then
  mv "$work/run/model" "$work/run/model.old-4194302"
  out=$("$sy" train --out "$work/run" "${T[@]}" --steps 6 --resume 2>&1) \
    && grep -q "resuming .* at step 4 of 6" <<<"$out" \
    && pass "--resume after an interrupted save" "$(grep -o 'resuming.*' <<<"$out")" \
    || fail "--resume after an interrupted save" "$(tail -3 <<<"$out")"
else
  fail "recovery" "the checkpoint was not put back: $(ls "$work/run")"
fi
"$sy" train --out "$work/slow" "${T[@]}" --steps 100000 --save-every 3 --log-every 50 >/dev/null 2>&1 &
pid=$!
for _ in $(seq 1 600); do [ -f "$work/slow/model/trainer_state.json" ] && break; sleep 0.1; done
kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
step=$(grep -o '"step": [0-9]*' "$work/slow/model/trainer_state.json" 2>/dev/null | grep -o '[0-9]*$')
# Saving only on logged steps would give multiples of 150 (lcm of 3 and 50).
if [ -n "$step" ] && [ $((step % 3)) -eq 0 ] && [ $((step % 150)) -ne 0 ]; then
  pass "--save-every 3 --log-every 50" "a checkpoint at step $step (not a logged step)"
else
  fail "--save-every 3 --log-every 50" "checkpoint step '${step}'"
fi
if ls -d /tmp/sy_fresh_$pid >/dev/null 2>&1; then fail "killed run" "left /tmp/sy_fresh_$pid"
else pass "killed run" "nothing left in /tmp"; fi

# ---- ranks started with different arguments refuse instead of hanging
if command -v mpirun >/dev/null; then
  mpi=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root)
  EXPECT_TIMEOUT=120 expect "ranks with different -n" "other arguments than rank 0" -- \
    "${mpi[@]}" -np 1 "$sy" generate -m "$m" --prompt hi -n 3 : -np 1 "$sy" generate -m "$m" --prompt hi -n 5
fi

echo "$failures failure(s)"
[ "$failures" -eq 0 ]
