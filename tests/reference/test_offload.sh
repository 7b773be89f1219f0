#!/usr/bin/env bash
# Offloaded experts (`--expert-cache-mb`, moe/expert_cache.h):
#  - logits with the routed experts read on demand from the files equal the resident model's
#    bit for bit, with a cache of one expert, of a few, and of all of them, with and without
#    streaming ahead, for per-expert and fused (transformers v5) checkpoints;
#  - batched and speculative decoding with offloaded experts emit exactly plain greedy
#    decoding's tokens;
#  - the statistics add up: a cache that holds every expert reads each one at most once;
#  - bad input: a budget below one expert, --offload-gbps without a cache, offloading under
#    mpirun, and a checkpoint truncated while a run reads from it are clear errors (the last
#    one must not crash: everything but the experts was copied out of the mapping at load).
# Usage: test_offload.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = a reference is missing.
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py=/usr/bin/python3
rm -rf "$work" && mkdir -p "$work"
"$py" -c "import numpy" 2>/dev/null || { echo "SKIP: $py cannot import numpy"; exit 77; }
failures=0
pass() { echo "PASS [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }
same() {  # NAME A.npy B.npy: bit-identical logits
  if out=$("$py" -c "
import numpy as np, sys
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
assert a.shape == b.shape and (a == b).all(), f'max |diff| {abs(a - b).max()}'
print(f'{a.shape[0]} x {a.shape[1]} logits identical')" "$2" "$3" 2>&1); then pass "$1" "$out"; else fail "$1" "$out"; fi
}
target="$root/models/kjv-moe-9m"
ids=$("$py" -c "import random; random.seed(3); print(','.join(str(random.randrange(4096)) for _ in range(64)))")

# ---- logits: offloaded == resident
"$sy" score -m "$target" --ids "$ids" --quiet --dump-logits "$work/resident.npy" >/dev/null 2>&1
expert_mb=$("$py" -c "print(256 * 192 * 3 * 2 / 1e6)")  # one kjv-moe-9m expert (BF16)
for mb in 0.3 1 100; do
  for flag in "" --no-stream-ahead; do
    "$sy" score -m "$target" --ids "$ids" --quiet --dump-logits "$work/off$mb$flag.npy" \
      --expert-cache-mb "$mb" $flag >/dev/null 2>"$work/off$mb.err" || fail "score --expert-cache-mb $mb $flag" "$(tail -2 "$work/off$mb.err")"
    same "cache $mb MB (expert $expert_mb MB) $flag == resident" "$work/resident.npy" "$work/off$mb$flag.npy"
  done
done
f="$work/fused"
"$sy" make-tiny --out "$f" --family qwen3_moe --experts 6 --top-k 2 --fused-experts --layers 3 --dtype BF16 --vocab 512 >/dev/null
fids=$("$py" -c "import random; random.seed(4); print(','.join(str(random.randrange(512)) for _ in range(33)))")
"$sy" score -m "$f" --ids "$fids" --quiet --dump-logits "$work/fused_res.npy" >/dev/null 2>&1
"$sy" score -m "$f" --ids "$fids" --quiet --dump-logits "$work/fused_off.npy" --expert-cache-mb 0.05 >/dev/null 2>"$work/fused.err" || fail "fused offload" "$(tail -2 "$work/fused.err")"
same "fused experts, small cache == resident" "$work/fused_res.npy" "$work/fused_off.npy"

# ---- statistics: a cache that holds everything reads each expert at most once
"$sy" score -m "$target" --ids "$ids" --quiet --expert-cache-mb 100 >/dev/null 2>"$work/stats.err"
if out=$("$py" - "$work/stats.err" <<'PY' 2>&1
import re, sys
t = open(sys.argv[1]).read()
m = re.search(r"Offloaded experts \(([\d.]+) MiB of experts.*read ([\d.]+) (KiB|MiB)", t)
assert m, "no offload statistics line"
total, read = float(m.group(1)), float(m.group(2)) / (1024 if m.group(3) == "KiB" else 1)
assert 0 < read <= total + 1e-9, f"read {read} MiB of {total} MiB"
print(f"read {read} MiB of {total} MiB of experts")
PY
); then pass "big cache reads each expert at most once" "$out"; else fail "big cache reads each expert at most once" "$out"; fi

# ---- decoding with offloaded experts: batched and speculative == plain greedy
printf 'And God said\nIn the beginning\nThe LORD is my shepherd\n' >"$work/prompts.txt"
"$sy" generate -m "$target" --prompts "$work/prompts.txt" -n 24 --ignore-eos --json "$work/plain.json" >/dev/null 2>&1
"$sy" generate -m "$target" --prompts "$work/prompts.txt" -n 24 --ignore-eos --json "$work/off.json" --expert-cache-mb 0.6 >/dev/null 2>&1
"$sy" generate -m "$target" --prompts "$work/prompts.txt" -n 24 --ignore-eos --json "$work/offspec.json" --expert-cache-mb 0.6 \
  --draft "$root/models/kjv-draft-2m" --draft-len 3 >/dev/null 2>&1
if out=$("$py" - "$work" <<'PY' 2>&1
import json, sys
w = sys.argv[1]
a = json.load(open(f"{w}/plain.json"))["sequences"]
for name in ["off", "offspec"]:
    b = json.load(open(f"{w}/{name}.json"))["sequences"]
    assert [x["ids"] for x in a] == [x["ids"] for x in b], f"{name} differs from plain"
print("offloaded, and offloaded + speculative: the same tokens as resident plain greedy")
PY
); then pass "decoding with offloaded experts" "$out"; else fail "decoding with offloaded experts" "$out"; fi

# ---- bad input
source "$here/expect_error.sh"
expect "budget below one expert" "cannot hold one expert" -- "$sy" score -m "$target" --ids 1,2,3 --expert-cache-mb 0.1
expect "gbps without a cache" "add --expert-cache-mb" -- "$sy" score -m "$target" --ids 1,2,3 --offload-gbps 1
if command -v mpirun >/dev/null; then
  expect "offloading under mpirun" "under mpirun" -- timeout 120 env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" \
    mpirun --oversubscribe --allow-run-as-root -np 2 "$sy" score -m "$target" --ids 1,2,3 --expert-cache-mb 1
fi
# A checkpoint truncated while a slow (emulated 0.02 Gbit/s) offloaded run reads from it.
cp -r "$target" "$work/victim"
"$sy" generate -m "$work/victim" -p "And God said" -n 64 --ignore-eos --expert-cache-mb 0.3 --offload-gbps 0.02 \
  >"$work/victim.out" 2>&1 &
pid=$!
sleep 2
truncate -s 1000000 "$work/victim/model.safetensors"
wait "$pid"
rc=$?
if [ "$rc" -ne 0 ] && [ "$rc" -lt 128 ] && grep -q "was truncated or replaced after the model was loaded" "$work/victim.out"; then
  pass "checkpoint truncated during offloaded decoding" "exit $rc: $(grep -m1 error "$work/victim.out" | head -c 200)"
else
  fail "checkpoint truncated during offloaded decoding" "exit $rc: $(tail -3 "$work/victim.out")"
fi

echo "test_offload: $failures failure(s)"
[ "$failures" -eq 0 ]
