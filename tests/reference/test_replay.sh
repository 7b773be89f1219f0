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
# (The help text is captured first: grep -q leaving a pipe early would SIGPIPE the binary, and
# under pipefail that reads as "no --trace flag", a skip by chance.)
score_help=$("$sy" score --help 2>/dev/null || true)
if ! grep -q -- "--trace" <<<"$score_help"; then
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

  "$py" "$here/replay_checks.py" case "$d" || fail "[$name] numpy check"
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
