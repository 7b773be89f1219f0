#!/usr/bin/env bash
# switchyard replay against an independent numpy computation on a real routing trace:
#  - `score --trace` on a tiny model writes the router outputs of every MoE layer call;
#  - replaying it with `none` reproduces the loads the run itself reported (--load-json) and
#    the bincount of the recorded router ids;
#  - replaying with `score` at gamma 1.0 (one device, and 2 devices = 2 token slices per call)
#    gives exactly the loads numpy derives per call / slice / expert: min(N_e, C) with
#    C = ceil(gamma * T_slice * k / E), DT = sum ReLU(N_e - C) / sum N_e;
#  - a trace recorded WITH score drop keeps, per call / slice / expert, exactly the C
#    highest-scoring pairs (numpy), and replaying it with the same policy matches the record;
#  - the heatmaps are well-formed XML with layers x experts cells; bad traces are clear errors.
# Usage: test_replay.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = a reference is missing.
set -euo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
if ! "$py" -c "import numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import numpy (install python3-numpy)" >&2
  exit 77
fi
if ! "$sy" score --help 2>/dev/null | grep -q -- "--trace"; then
  echo "SKIP: 'switchyard score' has no --trace flag in this build (it writes the trace replayed here)" >&2
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
export SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1

text="$work/text.txt"
for i in $(seq 1 12); do
  echo "In the beginning $i the routers chose their experts, and some experts were busier than others." >>"$text"
done

failed=0
fail() { echo "FAIL: $*"; failed=1; }

# name | make-tiny flags | score flags (windows and batches give several forward calls)
cases=(
  "qwen3_e16_k4|--family qwen3_moe --experts 16 --top-k 4 --layers 3|--window 48 --batch 2"
  "dots1_dense_groups|--family dots1 --experts 12 --top-k 3 --groups 4 --topk-groups 2 --dense-layers 1 --layers 3 --shared-ffn 32 --expert-ffn 32|--window 64 --batch 3"
)
for c in "${cases[@]}"; do
  IFS='|' read -r name tiny_flags score_flags <<<"$c"
  d="$work/$name"
  # shellcheck disable=SC2086
  "$sy" make-tiny --out "$d/model" --seed 3 $tiny_flags >/dev/null
  # shellcheck disable=SC2086
  "$sy" score --model "$d/model" --file "$text" --quiet $score_flags --trace "$d/none.safetensors" \
    --load-json "$d/none_load.json" >"$d/score_none.out" 2>&1 || { fail "[$name] score --trace"; cat "$d/score_none.out"; continue; }
  # shellcheck disable=SC2086
  "$sy" score --model "$d/model" --file "$text" --quiet $score_flags --capacity-policy score \
    --capacity-factor 1.0 --devices 2 --trace "$d/drop.safetensors" --load-json "$d/drop_load.json" \
    >"$d/score_drop.out" 2>&1 || { fail "[$name] score --capacity-policy score --trace"; cat "$d/score_drop.out"; continue; }

  run_replay() {  # run_replay OUTNAME FLAGS...
    local out="$1"; shift
    "$sy" replay "$@" --json "$d/$out.json" >"$d/$out.out" 2>&1 || { fail "[$name] replay $*"; cat "$d/$out.out"; }
  }
  run_replay none --trace "$d/none.safetensors" --heatmap "$d/none.svg"
  run_replay score1 --trace "$d/none.safetensors" --capacity-policy score --capacity-factor 1.0
  run_replay score1_d2 --trace "$d/none.safetensors" --capacity-policy score --capacity-factor 1.0 --devices 2 \
    --heatmap "$d/score1_d2.svg" --heatmap-before "$d/score1_d2_before.svg"
  run_replay drop_same --trace "$d/drop.safetensors" --capacity-policy score --capacity-factor 1.0 --devices 2
  grep -q "reproduces the recorded loads exactly" "$d/none.out" || fail "[$name] replay none: no match line"
  grep -q "reproduces the recorded loads exactly" "$d/drop_same.out" || fail "[$name] replay of a score-drop trace: no match line"

  "$py" - "$d" "$here" <<'PY' || fail "[$name] numpy check"
import json, math, os, sys
import numpy as np
import xml.etree.ElementTree as ET
d, here = sys.argv[1], sys.argv[2]
sys.path.insert(0, here)
from safetensors_np import read_file

def load(name):
    with open(os.path.join(d, name)) as f:
        return json.load(f)

def layers_of(stats):
    return {l["layer"]: l for l in stats["layers"]}

def trace(path):
    t = read_file(os.path.join(d, path))
    out = {}
    for key, arr in t.items():
        _, l, field = key.split(".", 2)
        out.setdefault(int(l), {})[field] = arr
    return out

errors = []
def check(cond, what):
    if not cond:
        errors.append(what)

def slices(T, D):  # Placement::token_begin: contiguous slices of a call's tokens
    return [(T * i // D, T * (i + 1) // D) for i in range(D)]

def expected_score_drop(tr, gamma, D, E):
    """Per layer: loads before / after and overflow of score drop, from the router ids."""
    res = {}
    for l, t in tr.items():
        ids, k = t["router_ids"], t["router_ids"].shape[1]
        before, after, overflow, first = np.zeros(E, np.int64), np.zeros(E, np.int64), 0, 0
        for T in t["call_tokens"]:
            for b, e in slices(int(T), D):
                n = np.bincount(ids[first + b:first + e].ravel(), minlength=E)
                before += n
                if e - b <= 1:  # one-token slices are left alone (skip_single_token)
                    after += n
                    continue
                C = max(1, math.ceil(gamma * (e - b) * k / E))
                after += np.minimum(n, C)
                overflow += int(np.maximum(n - C, 0).sum())
            first += int(T)
        res[l] = (before, after, overflow)
    return res

none_tr = trace("none.safetensors")
E = next(iter(none_tr.values()))["scores"].shape[1]
score_load = layers_of(load("none_load.json"))
replay_none = load("none.json")
check(replay_none["matches_recording"] is True, "replay none: matches_recording")
rn = layers_of(replay_none["expert_load"])
check(sorted(rn) == sorted(score_load) == sorted(none_tr), f"active layers {sorted(rn)} {sorted(score_load)} {sorted(none_tr)}")
for l, t in none_tr.items():
    counts = np.bincount(t["router_ids"].ravel(), minlength=E).tolist()
    check(rn[l]["tokens_per_expert"] == score_load[l]["tokens_per_expert"] == counts,
          f"layer {l}: replay none {rn[l]['tokens_per_expert']} vs score {score_load[l]['tokens_per_expert']} vs trace {counts}")
    check(t["call_tokens"].sum() == t["scores"].shape[0], f"layer {l}: call tokens")
    check(len(t["call_tokens"]) >= 2, f"layer {l}: expected several forward calls, got {t['call_tokens']}")
    check(np.array_equal(t["ids"][:, :t["router_ids"].shape[1]], t["router_ids"]), f"layer {l}: dropless ids == router ids")

for out, D in (("score1.json", 1), ("score1_d2.json", 2)):
    got = layers_of(load(out)["expert_load"])
    for l, (before, after, overflow) in expected_score_drop(none_tr, 1.0, D, E).items():
        check(got[l]["tokens_per_expert_before_policy"] == before.tolist(), f"{out} layer {l}: before")
        check(got[l]["tokens_per_expert"] == after.tolist(),
              f"{out} layer {l}: after {got[l]['tokens_per_expert']} != numpy {after.tolist()}")
        check(abs(got[l]["dropped_token_fraction"] - overflow / before.sum()) < 1e-12,
              f"{out} layer {l}: DT {got[l]['dropped_token_fraction']} != {overflow / before.sum()}")
    check(any(got[l]["pairs_dropped"] > 0 for l in got), f"{out}: gamma 1.0 dropped nothing")

# The trace recorded under score drop: each slice keeps, per expert, the C highest scores.
drop_tr = trace("drop.safetensors")
for l, t in drop_tr.items():
    ids, rid, scores, k, first = t["ids"], t["router_ids"], t["scores"], t["router_ids"].shape[1], 0
    for T in t["call_tokens"]:
        for b, e in slices(int(T), 2):
            kept = ids[first + b:first + e]
            routed = rid[first + b:first + e]
            C = max(1, math.ceil(1.0 * (e - b) * k / E)) if e - b > 1 else None
            for x in range(E):
                tokens = [i for i in range(e - b) if x in routed[i]]
                if C is not None and len(tokens) > C:  # stable: ties keep the earlier token
                    tokens = sorted(tokens, key=lambda i: (-scores[first + b + i, x], i))[:C]
                want = sorted(tokens)
                have = sorted(i for i in range(e - b) if x in kept[i])
                check(have == want, f"drop trace layer {l} call@{first} slice {b}:{e} expert {x}: kept {have}, numpy {want}")
        first += int(T)
drop_load = layers_of(load("drop_load.json"))
same = load("drop_same.json")
check(same["matches_recording"] is True, "replay of the score-drop trace: matches_recording")
for l, row in layers_of(same["expert_load"]).items():
    check(row["tokens_per_expert"] == drop_load[l]["tokens_per_expert"], f"drop replay layer {l}: after")
    check(row["tokens_per_expert_before_policy"] == drop_load[l]["tokens_per_expert_before_policy"], f"drop replay layer {l}: before")

ns = "{http://www.w3.org/2000/svg}"
for svg in ("none.svg", "score1_d2.svg", "score1_d2_before.svg"):
    root = ET.parse(os.path.join(d, svg)).getroot()
    cells = [r for r in root.iter(ns + "rect") if r.get("class") == "cell"]
    check(len(cells) == len(none_tr) * E, f"{svg}: {len(cells)} cells, expected {len(none_tr)} x {E}")
    texts = [t.text or "" for t in root.iter(ns + "text")]
    check(any(t.startswith("max/mean") for t in texts), f"{svg}: no per-layer notes")

for e in errors[:20]:
    print("  " + e)
sys.exit(1 if errors else 0)
PY
  [ $failed -eq 0 ] && echo "PASS [$name]: replay none == score loads == trace; score drop == numpy (1 and 2 devices); recorded drop == numpy; heatmaps parse"
done

# Bad traces: clear errors, exit 1, no crash.
expect_error() {  # expect_error PATTERN -- ARGS...
  local pattern="$1"; shift 2
  local out rc
  out=$("$sy" replay "$@" 2>&1); rc=$?
  if [ $rc -ne 1 ] || ! grep -qF -- "$pattern" <<<"$out"; then
    fail "replay $* exited $rc without '$pattern': $out"
  else
    echo "PASS [error]: $(tr '\n' ' ' <<<"$out" | head -c 160)"
  fi
}
set +e
m="$work/qwen3_e16_k4/model"
expect_error "not a Switchyard routing trace" -- --trace "$m/model.safetensors"
expect_error "cannot open" -- --trace "$work/missing.safetensors"
head -c 100 "$work/qwen3_e16_k4/none.safetensors" >"$work/truncated.safetensors"
expect_error "truncated.safetensors" -- --trace "$work/truncated.safetensors"
expect_error "17 devices cannot share 16 experts" -- --trace "$work/qwen3_e16_k4/none.safetensors" --devices 17
expect_error "unknown capacity policy" -- --trace "$work/qwen3_e16_k4/none.safetensors" --capacity-policy fastest
expect_error "does not exist" -- --trace "$work/qwen3_e16_k4/none.safetensors" --heatmap "$work/no/dir/x.svg"
set -e
exit $failed
