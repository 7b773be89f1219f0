#!/usr/bin/env bash
# `switchyard partition` (DualSparse-MoE's complete transformation) computes the same function:
#  - for every family with routed experts (softmax and sigmoid routers, renormalised or not, a
#    selection bias, shared experts, ScMoE shortcuts; per-expert and fused v5 tensors; F32 and
#    BF16; factors 2, 3 and 4), the partitioned checkpoint's logits equal the original's within
#    compare_npy.py's float tolerance;
#  - the partitioned checkpoint is an ordinary checkpoint: the independent PyTorch reference
#    (hf_reference.py) runs it and agrees with Switchyard;
#  - expert parallelism runs it (mpirun -np 2 == one process);
#  - every sub-expert carries its expert's load (each of the P sub-experts of expert e is routed
#    exactly the tokens e was);
#  - `profile-neurons` computes DualSparse's four neuron-importance metrics as an independent
#    PyTorch computation does (neuron_profile_checks.py), also through an ScMoE shortcut, and
#    `partition --importance` (experts reconstructed: neurons sorted by importance) still
#    computes the original function;
#  - 1T-Drop on a partitioned model equals 1T-Drop on the original (a sub-expert's share is
#    summed over its expert's parts), and 2T-Drop that keeps only major parts equals the same
#    checkpoint with every minor part's down projection zeroed (written by numpy) run dropless;
#  - load-aware thresholds (--drop-load-aware, 2 devices): in the first MoE layer the busiest
#    device keeps exactly what plain 1T keeps and every other device at least as much; under mpirun (where one rank holds
#    no tokens) the logits equal one process's with --devices 2;
#  - the partial transformation (gate kept, each selected expert routed to all its parts with
#    its weight) equals the original too, for every family above, with group-limited routing,
#    under mpirun, and with 1T-Drop; its routing trace records the grouping, so `replay` drops
#    what the live run dropped;
#  - `partition --merge` undoes either transformation (and a reconstruction) byte for byte:
#    every tensor and config.json equal the original's (numpy); a model changed after the
#    partition, or not partitioned, is refused; training refuses a partial partition;
#  - bad input is a clear error, and no half-written folder is left behind.
# Usage: test_partition.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = a reference is missing.
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
rm -rf "$work" && mkdir -p "$work"
"$py" -c "import numpy, torch" 2>/dev/null || { echo "SKIP: $py cannot import numpy and torch"; exit 77; }
failures=0
pass() { echo "PASS [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }

ids=$("$py" -c "import numpy as np; r=np.random.default_rng(7); print(','.join(str(x) for x in r.integers(0, 512, 19)))")
# name | factor | torch reference? | make-tiny flags
cases=(
  "mixtral_f32|2|torch|--layers 3 --family mixtral --experts 4 --top-k 2 --dtype F32"
  "mixtral_bf16_p4|4|-|--layers 3 --family mixtral --experts 4 --top-k 2 --dtype BF16"
  "qwen2_shared_p3|3|torch|--layers 3 --family qwen2_moe --experts 4 --top-k 2 --shared-ffn 48 --expert-ffn 48 --dtype F32"
  "qwen3_fused_bf16|2|-|--layers 3 --family qwen3_moe --experts 6 --top-k 2 --fused-experts --dtype BF16"
  "olmoe_no_renorm|2|-|--layers 3 --family olmoe --experts 8 --top-k 2 --dtype F32"
  "dots1_sigmoid_bias|2|torch|--layers 3 --family dots1 --experts 8 --top-k 2 --expert-ffn 32 --shared-ffn 64 --dense-layers 1 --dtype F32"
  "dots1_sigmoid_raw|2|-|--layers 3 --family dots1 --experts 8 --top-k 2 --norm-topk 0 --dtype F32"
  "scmoe_pos2_cg1|2|-|--family scmoe --experts 4 --layers 4 --scmoe-shortcut pos2 --scmoe-combine cg1 --dtype F32"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name factor torch flags <<<"$c"
  d="$work/$name"
  # shellcheck disable=SC2086
  "$sy" make-tiny --out "$d" --vocab 512 --seed 11 $flags >/dev/null 2>"$d.err" \
    || { fail "$name" "make-tiny: $(cat "$d.err")"; continue; }
  if ! msg=$("$sy" partition --model "$d" --out "$d-p" --factor "$factor" 2>&1); then
    fail "$name" "partition: $msg"
    continue
  fi
  for m in "$d" "$d-p"; do
    "$sy" score --model "$m" --ids "$ids" --quiet --dump-logits "$m.npy" --load-json "$m.load.json" \
      >/dev/null 2>"$m.err" || fail "$name" "score $m: $(cat "$m.err")"
  done
  dtype=$(grep -o '"torch_dtype": "[a-z0-9]*"' "$d/config.json" | sed 's/.*"\([a-z0-9]*\)"$/\1/' | sed 's/bfloat16/bf16/;s/float16/f16/;s/float32/f32/')
  if out=$("$py" "$here/compare_npy.py" "$d-p.npy" "$d.npy" --dtype "$dtype" --model "$d" --label "$name partitioned vs original" 2>&1); then
    pass "$name: P=$factor logits == original" "$(tail -1 <<<"$out")"
  else fail "$name: P=$factor logits == original" "$out"; fi
  if out=$("$py" - "$d.load.json" "$d-p.load.json" "$factor" <<'PY' 2>&1
import json, sys
a, b, P = json.load(open(sys.argv[1])), json.load(open(sys.argv[2])), int(sys.argv[3])
def loads(j):
    return [l["tokens_per_expert"] if "tokens_per_expert" in l else l["loads"] for l in j["layers"]]
la, lb = loads(a), loads(b)
assert len(la) == len(lb), (len(la), len(lb))
for x, y in zip(la, lb):
    want = [v for v in x for _ in range(P)]
    assert y == want, f"sub-expert loads {y} != each expert's load repeated {P}x {want}"
print(f"{len(la)} MoE layers: every sub-expert routed exactly its expert's tokens")
PY
  ); then pass "$name: sub-expert loads" "$out"; else fail "$name: sub-expert loads" "$out"; fi
  # The partial transformation: same function, same per-part loads.
  if msg=$("$sy" partition --model "$d" --out "$d-q" --factor "$factor" --mode partial 2>&1); then
    "$sy" score --model "$d-q" --ids "$ids" --quiet --dump-logits "$d-q.npy" >/dev/null 2>"$d-q.err" \
      || fail "$name" "score partial: $(cat "$d-q.err")"
    if out=$("$py" "$here/compare_npy.py" "$d-q.npy" "$d.npy" --dtype "$dtype" --model "$d" --label "$name partial vs original" 2>&1); then
      pass "$name: P=$factor partial transformation == original" "$(tail -1 <<<"$out")"
    else fail "$name: P=$factor partial transformation == original" "$out"; fi
  else fail "$name" "partition --mode partial: $msg"; fi
  if [ "$torch" = torch ]; then
    "$py" "$here/hf_reference.py" --model "$d-p" --ids "$ids" --out "$d-p.ref.npy" >/dev/null 2>"$d-p.ref.err" \
      || { fail "$name: torch runs the partitioned checkpoint" "$(tail -3 "$d-p.ref.err")"; continue; }
    if out=$("$py" "$here/compare_npy.py" "$d-p.npy" "$d-p.ref.npy" --dtype "$dtype" --model "$d-p" --label "$name" 2>&1); then
      pass "$name: PyTorch reference on the partitioned checkpoint" "$(tail -1 <<<"$out")"
    else fail "$name: PyTorch reference on the partitioned checkpoint" "$out"; fi
  fi
done

# ---- expert parallelism runs the partitioned model (8 sub-experts over 2 ranks)
if command -v mpirun >/dev/null; then
  mpi=(timeout 300 env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root)
  m="$work/mixtral_f32-p"
  if "${mpi[@]}" -np 2 "$sy" score --model "$m" --ids "$ids" --quiet --dump-logits "$work/ep.npy" >/dev/null 2>"$work/ep.err"; then
    if out=$("$py" "$here/compare_npy.py" "$work/ep.npy" "$m.npy" --dtype f32 --model "$m" --label "ep" 2>&1); then
      pass "mpirun -np 2 on the partitioned model == one process" "$(tail -1 <<<"$out")"
    else fail "mpirun -np 2 on the partitioned model == one process" "$out"; fi
  else fail "mpirun -np 2 score" "$(tail -3 "$work/ep.err")"; fi
  m="$work/mixtral_f32-q"
  if "${mpi[@]}" -np 2 "$sy" score --model "$m" --ids "$ids" --quiet --dump-logits "$work/epq.npy" >/dev/null 2>"$work/epq.err"; then
    if out=$("$py" "$here/compare_npy.py" "$work/epq.npy" "$work/mixtral_f32.npy" --dtype f32 --model "$m" --label "ep partial" 2>&1); then
      pass "mpirun -np 2 on the partial partition == the original" "$(tail -1 <<<"$out")"
    else fail "mpirun -np 2 on the partial partition == the original" "$out"; fi
  else fail "mpirun -np 2 score (partial)" "$(tail -3 "$work/epq.err")"; fi
fi

# ---- the partial transformation keeps group-limited routing (which the complete one refuses)
g="$work/grouped"
"$sy" make-tiny --out "$g" --family dots1 --experts 8 --top-k 2 --groups 2 --topk-groups 1 --vocab 512 --dtype F32 >/dev/null
"$sy" partition -m "$g" -o "$g-q" --factor 2 --mode partial >/dev/null 2>"$g-q.err" || fail "grouped partial" "$(cat "$g-q.err")"
for x in "$g" "$g-q"; do "$sy" score --model "$x" --ids "$ids" --quiet --dump-logits "$x.npy" >/dev/null 2>&1; done
if out=$("$py" "$here/compare_npy.py" "$g-q.npy" "$g.npy" --dtype f32 --model "$g" --label "grouped partial" 2>&1); then
  pass "group-limited routing (n_group 2): partial transformation == original" "$(tail -1 <<<"$out")"
else fail "group-limited routing (n_group 2): partial transformation == original" "$out"; fi

# ---- neuron importance (profile-neurons) against PyTorch; reconstruction keeps the function
pids=$("$py" -c "import numpy as np; r=np.random.default_rng(3); print(','.join(str(x) for x in r.integers(0, 512, 41)))")
for name in mixtral_bf16_p4 scmoe_pos2_cg1; do
  d="$work/$name"
  # SY_BF16_DOT=0: float32 products of the BF16 weights, as PyTorch computes them here.
  if ! SY_BF16_DOT=0 "$sy" profile-neurons -m "$d" --ids "$pids" --window 16 -o "$d.imp.safetensors" >/dev/null 2>"$d.imp.err"; then
    fail "$name: profile-neurons" "$(cat "$d.imp.err")"; continue
  fi
  if out=$("$py" "$here/neuron_profile_checks.py" "$d" "$d.imp.safetensors" "$pids" 16 2>&1); then
    pass "$name: neuron importance == PyTorch" "$out"
  else fail "$name: neuron importance == PyTorch" "$out"; fi
  "$sy" partition -m "$d" -o "$d-r" --factor 2 --importance "$d.imp.safetensors" --metric abs_silu_up >/dev/null 2>"$d-r.err" \
    || { fail "$name: partition --importance" "$(cat "$d-r.err")"; continue; }
  "$sy" score --model "$d-r" --ids "$ids" --quiet --dump-logits "$d-r.npy" >/dev/null 2>&1
  dtype=$(grep -o '"torch_dtype": "[a-z0-9]*"' "$d/config.json" | sed 's/.*"\([a-z0-9]*\)"$/\1/' | sed 's/bfloat16/bf16/;s/float16/f16/;s/float32/f32/')
  if out=$("$py" "$here/compare_npy.py" "$d-r.npy" "$d.npy" --dtype "$dtype" --model "$d" --label "$name reconstructed" 2>&1); then
    pass "$name: reconstructed (sorted by abs_silu_up) == original" "$(tail -1 <<<"$out")"
  else fail "$name: reconstructed (sorted by abs_silu_up) == original" "$out"; fi
done

# ---- 1T / 2T-Drop (--capacity-policy threshold)
m="$work/mixtral_f32"
tids=$("$py" -c "import numpy as np; r=np.random.default_rng(9); print(','.join(str(x) for x in r.integers(0, 512, 37)))")
"$sy" profile-neurons -m "$m" --ids "$tids" -o "$m.imp.safetensors" >/dev/null
"$sy" partition -m "$m" -o "$m-r" --factor 2 --importance "$m.imp.safetensors" >/dev/null
for x in "$m" "$m-p" "$m-q"; do
  "$sy" score --model "$x" --ids "$ids" --quiet --capacity-policy threshold --drop-threshold 0.3 \
    --load-json "$x.1t.json" \
    --dump-logits "$x.1t.npy" >"$x.1t.out" 2>&1 || fail "1T-Drop on $x" "$(tail -2 "$x.1t.out")"
done
dropped=$(grep -o "pairs dropped [0-9.]*%" "$m.1t.out")
if out=$("$py" "$here/compare_npy.py" "$m-q.1t.npy" "$m.1t.npy" --dtype f32 --model "$m" --label "1T partial" 2>&1); then
  pass "1T-Drop (0.3): partial partition == original" "$(tail -1 <<<"$out")"
else fail "1T-Drop (0.3): partial partition == original" "$out"; fi
# A dropless run's trace of the partial partition, replayed with 1T: the first MoE layer (the
# only one whose input the drops do not change) drops what the live 1T run dropped, which
# needs the trace to know which parts make up an expert.
"$sy" score --model "$m-q" --ids "$ids" --quiet --trace "$work/q.trace.safetensors" >/dev/null 2>&1
"$sy" replay --trace "$work/q.trace.safetensors" --capacity-policy threshold --drop-threshold 0.3 \
  --json "$work/q.replay.json" -q >/dev/null 2>"$work/q.replay.err" || fail "replay" "$(cat "$work/q.replay.err")"
if out=$("$py" - "$work/q.replay.json" "$m-q.1t.json" <<'PY' 2>&1
import json, sys
a, b = json.load(open(sys.argv[1]))["expert_load"], json.load(open(sys.argv[2]))
key = lambda l: l.get("tokens_per_expert", l.get("loads"))
ra, rb = key(a["layers"][0]), key(b["layers"][0])
assert ra == rb, f"replayed {ra} != live {rb}"
assert sum(ra) < sum(a["layers"][0]["tokens_per_expert_before_policy"]), "nothing dropped"
print(f"layer 0 keeps {sum(ra)} of {sum(a['layers'][0]['tokens_per_expert_before_policy'])} part-pairs in both")
PY
); then pass "routing trace of a partial partition: replayed 1T == live 1T" "$out"
else fail "routing trace of a partial partition: replayed 1T == live 1T" "$out"; fi
if out=$("$py" "$here/compare_npy.py" "$m-p.1t.npy" "$m.1t.npy" --dtype f32 --model "$m" --label "1T" 2>&1); then
  pass "1T-Drop (0.3): partitioned == original" "$dropped; $(tail -1 <<<"$out")"
else fail "1T-Drop (0.3): partitioned == original" "$out"; fi
"$sy" score --model "$m-r" --ids "$ids" --quiet --capacity-policy threshold --drop-threshold 0,1 \
  --dump-logits "$m-r.2t.npy" >"$m-r.2t.out" 2>&1 || fail "2T-Drop" "$(tail -2 "$m-r.2t.out")"
if "$py" - "$m-r" "$work/major_only" "$here" <<'PY'
import os, re, shutil, sys
sys.path.insert(0, sys.argv[3])
import safetensors_np
src, dst = sys.argv[1], sys.argv[2]
shutil.copytree(src, dst)
t = safetensors_np.read_checkpoint(src)
for name, v in t.items():
    m = re.match(r"model\.layers\.\d+\.block_sparse_moe\.experts\.(\d+)\.w2\.weight", name)
    if m and int(m.group(1)) % 2 == 1:  # a minor part
        t[name] = v * 0
for f in os.listdir(dst):
    if f.endswith(".safetensors"):
        os.remove(os.path.join(dst, f))
safetensors_np.write_file(os.path.join(dst, "model.safetensors"), t)
PY
then
  "$sy" score --model "$work/major_only" --ids "$ids" --quiet --dump-logits "$work/major_only.npy" >/dev/null 2>&1
  if out=$("$py" "$here/compare_npy.py" "$m-r.2t.npy" "$work/major_only.npy" --dtype f32 --model "$m" --label "2T" 2>&1); then
    pass "2T-Drop (0,1): major parts only == minor parts zeroed (numpy)" "$(grep -o "pairs dropped [0-9.]*%" "$m-r.2t.out"); $(tail -1 <<<"$out")"
  else fail "2T-Drop (0,1): major parts only == minor parts zeroed (numpy)" "$out"; fi
else fail "2T-Drop reference checkpoint" "numpy could not write it"; fi
source "$here/expect_error.sh"  # expect NAME PATTERN... -- COMMAND: a clean failure naming PATTERN
lids=$("$py" -c "import numpy as np; r=np.random.default_rng(4); print(','.join(str(x) for x in r.integers(0, 512, 48)))")
for la in plain aware; do
  flag=(); [ "$la" = aware ] && flag=(--drop-load-aware)
  "$sy" score --model "$m" --ids "$lids" --quiet --devices 2 --capacity-policy threshold --drop-threshold 0.35 \
    "${flag[@]}" --load-json "$work/la_$la.json" --dump-logits "$work/la_$la.npy" >/dev/null 2>"$work/la_$la.err" \
    || fail "load-aware ($la)" "$(tail -2 "$work/la_$la.err")"
done
if out=$("$py" - "$work/la_plain.json" "$work/la_aware.json" <<'PY' 2>&1
import json, sys
a, b = json.load(open(sys.argv[1])), json.load(open(sys.argv[2]))
# The first MoE layer only: later layers see hidden states that the drops above them changed.
for la, lb in list(zip(a["layers"], b["layers"]))[:1]:
    before = la["tokens_per_expert_before_policy"]
    busiest = max(range(2), key=lambda d: sum(before[d * 2:(d + 1) * 2]))
    pa, pb = la["tokens_per_device"], lb["tokens_per_device"]
    assert pb[busiest] == pa[busiest], (la["layer"], "busiest device", pa, pb)
    assert all(y >= x for x, y in zip(pa, pb)), (la["layer"], pa, pb)
print(f"skipped {100 * a['expert_compute_dropped']['total']:.1f}% plain, "
      f"{100 * b['expert_compute_dropped']['total']:.1f}% load-aware; busiest device unchanged")
PY
); then pass "load-aware thresholds: light devices drop less" "$out"; else fail "load-aware thresholds: light devices drop less" "$out"; fi
if command -v mpirun >/dev/null; then
  if "${mpi[@]}" -np 2 "$sy" score --model "$m" --ids "$lids" --quiet --capacity-policy threshold \
      --drop-threshold 0.35 --drop-load-aware --dump-logits "$work/la_mpi.npy" >/dev/null 2>"$work/la_mpi.err"; then
    if out=$("$py" "$here/compare_npy.py" "$work/la_mpi.npy" "$work/la_aware.npy" --dtype f32 --model "$m" --label "la" 2>&1); then
      pass "load-aware under mpirun -np 2 == one process --devices 2" "$(tail -1 <<<"$out")"
    else fail "load-aware under mpirun -np 2 == one process --devices 2" "$out"; fi
  else fail "load-aware under mpirun" "$(tail -3 "$work/la_mpi.err")"; fi
fi
expect "2T without major parts" "has no major parts" -- "$sy" score --model "$m-p" --ids "$ids" -q --capacity-policy threshold --drop-threshold 0.1,0.3
expect "thresholds out of order" "thresholds out of order" -- "$sy" score --model "$m-r" --ids "$ids" -q --capacity-policy threshold --drop-threshold 0.3,0.1

# ---- partition --merge: every tensor and the config back, byte for byte
"$sy" partition -m "$m" -o "$m-rq" --factor 2 --mode partial --importance "$m.imp.safetensors" >/dev/null
for pair in "mixtral_f32-p|mixtral_f32" "mixtral_bf16_p4-p|mixtral_bf16_p4" "qwen3_fused_bf16-q|qwen3_fused_bf16" \
            "mixtral_f32-r|mixtral_f32" "mixtral_f32-rq|mixtral_f32" "grouped-q|grouped" "dots1_sigmoid_bias-p|dots1_sigmoid_bias"; do
  IFS='|' read -r part orig <<<"$pair"
  if ! msg=$("$sy" partition --merge -m "$work/$part" -o "$work/$part-merged" 2>&1); then
    fail "merge $part" "$msg"; continue
  fi
  if out=$("$py" - "$work/$part-merged" "$work/$orig" "$here" <<'PY' 2>&1
import json, sys
import numpy as np
sys.path.insert(0, sys.argv[3])
import safetensors_np
a, b = safetensors_np.read_checkpoint(sys.argv[1]), safetensors_np.read_checkpoint(sys.argv[2])
assert sorted(a) == sorted(b), f"tensor names differ: {sorted(set(a) ^ set(b))[:5]}"
for k in a:
    assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, (k, a[k].shape, b[k].shape)
    assert a[k].tobytes() == b[k].tobytes(), f"{k} differs"
ca, cb = (json.load(open(d + "/config.json")) for d in sys.argv[1:3])
assert ca == cb, f"config differs: {set(ca.items()) ^ set(cb.items()) if all(isinstance(v, (int, float, str)) for v in ca.values()) else ''}"
print(f"{len(a)} tensors and config.json identical")
PY
  ); then pass "merge $part == $orig" "$out"; else fail "merge $part == $orig" "$out"; fi
done
cp -r "$m-p" "$work/changed"
"$py" - "$work/changed" "$here" <<'PY'
import sys
sys.path.insert(0, sys.argv[2])
import safetensors_np
t = safetensors_np.read_checkpoint(sys.argv[1])
g = t["model.layers.1.block_sparse_moe.gate.weight"].copy()
g[3, 0] += 1.0  # row 3 = expert 1's second copy
t["model.layers.1.block_sparse_moe.gate.weight"] = g
safetensors_np.write_file(sys.argv[1] + "/model.safetensors", t)
PY
expect "merge of a changed partition" "differ, so the model changed after it was partitioned" -- "$sy" partition --merge -m "$work/changed" -o "$work/bad9"
expect "merge of an unpartitioned model" "is not a partitioned model" -- "$sy" partition --merge -m "$m" -o "$work/bad10"
cp -r "$m-r" "$work/noorder" && rm "$work/noorder/expert_partition.safetensors"
expect "merge without the saved order" "has no expert_partition.safetensors" -- "$sy" partition --merge -m "$work/noorder" -o "$work/bad11"
expect "partition twice" "is already partitioned" -- "$sy" partition -m "$m-p" -o "$work/bad12" --factor 2
expect "unknown mode" "--mode must be complete or partial" -- "$sy" partition -m "$m" -o "$work/bad13" --mode half
printf 'In the beginning God created the heaven and the earth.\n%.0s' $(seq 200) >"$work/corpus.txt"
expect "training a partial partition" "partial transformation" -- "$sy" train --init "$m-q" --corpus "$work/corpus.txt" --steps 1 --out "$work/bad14"

# ---- bad input: clear errors, nothing half-written
m="$work/mixtral_f32"
expect "factor not dividing the width" "does not divide the experts' FFN width" -- "$sy" partition -m "$m" -o "$work/bad1" --factor 5
expect "factor 1" "--factor: Value 1 not in range 2 to 1024" -- "$sy" partition -m "$m" -o "$work/bad2" --factor 1
expect "output exists" "exists; partition writes a new folder" -- "$sy" partition -m "$m" -o "$work/mixtral_f32-p" --factor 2
expect "missing model" "does not exist" -- "$sy" partition -m "$work/nowhere" -o "$work/bad3" --factor 2
"$sy" make-tiny --out "$work/grouped" --family dots1 --experts 8 --top-k 2 --groups 2 --topk-groups 1 --vocab 512 >/dev/null
expect "group-limited routing" "routes within expert groups" -- "$sy" partition -m "$work/grouped" -o "$work/bad4" --factor 2
cp -r "$m" "$work/truncated"
shard=$(ls "$work/truncated"/*.safetensors | head -1)
truncate -s 2000 "$shard"
expect "truncated weights" "safetensors" -- "$sy" partition -m "$work/truncated" -o "$work/bad5" --factor 2
expect "importance of another model" "profiled on a model with" -- "$sy" partition -m "$m" -o "$work/bad6" --importance "$work/scmoe_pos2_cg1.imp.safetensors"
expect "not an importance file" "is not a neuron importance file" -- "$sy" partition -m "$m" -o "$work/bad7" --importance "$m-p/model.safetensors"
expect "unknown metric" "unknown neuron metric" -- "$sy" partition -m "$m" -o "$work/bad8" --importance "$work/mixtral_bf16_p4.imp.safetensors" --metric l2
left=$(ls -d "$work"/bad* "$work"/*.partial-* 2>/dev/null)
[ -z "$left" ] && pass "no half-written output" "nothing left by the failed runs" || fail "no half-written output" "$left"

echo "test_partition: $failures failure(s)"
[ "$failures" -eq 0 ]
