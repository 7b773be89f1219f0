#!/usr/bin/env bash
# ReaLB (--precision-policy): per-rank precision of the routed experts.
#  - under mpirun -np 2 (experts split over the ranks, rows exchanged) the logits and every
#    rank's choice per layer call equal one process emulating 2 devices (--devices 2), for
#    realb and low-all, int8 and q4;
#  - each choice follows the documented rule, recomputed here in Python from the per-call rows
#    the report writes (--precision-json) and the step's token count;
#  - low precision really changes the experts' arithmetic, within int8's / NVFP4's error
#    (relative RMS of the logits vs bf16);
#  - modality tags: with every token tagged realb chooses as without tags; with none tagged no
#    rank switches;
#  - misuse is a clear error: realb without mpirun or --devices, an unknown policy or format,
#    q4 on rows that are not whole 32-value blocks, --modality-ids without realb, int8 where
#    the kernel is off (SY_INT8_DOT=0: it names q4 instead).
# Usage: test_realb.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = a reference is missing.
set -uo pipefail
sy="$1"
work="$2"
py=/usr/bin/python3
rm -rf "$work" && mkdir -p "$work"
"$py" -c "import numpy" 2>/dev/null || { echo "SKIP: $py cannot import numpy"; exit 77; }
command -v mpirun >/dev/null || { echo "SKIP: no mpirun"; exit 77; }
failures=0
pass() { echo "PASS [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }
mpi=(timeout 300 env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root -np 2)

m="$work/m"
"$sy" make-tiny --out "$m" --family mixtral --experts 8 --top-k 2 --layers 3 --hidden 128 \
  --expert-ffn 256 --vocab 512 --seed 3 >/dev/null || { fail setup make-tiny; exit 1; }
ids=$("$py" -c "import numpy as np; r=np.random.default_rng(2); print(','.join(str(x) for x in r.integers(0, 512, 160)))")
score() {  # score NAME [flags...]: logits to NAME.npy, choices to NAME.json
  local name="$1"
  shift
  "$sy" score -m "$m" --ids "$ids" --quiet --dump-logits "$work/$name.npy" \
    --precision-json "$work/$name.json" "$@" >/dev/null 2>"$work/$name.err"
}
same() {  # same LABEL A B: identical logits and identical choices
  local out
  if out=$("$py" - "$work/$2" "$work/$3" <<'PY' 2>&1
import json, sys
import numpy as np
a, b = sys.argv[1], sys.argv[2]
d = float(np.max(np.abs(np.load(a + ".npy") - np.load(b + ".npy"))))
ca = [[r["low"] for r in k["records"]] for k in json.load(open(a + ".json"))["ranks"]]
cb = [[r["low"] for r in k["records"]] for k in json.load(open(b + ".json"))["ranks"]]
assert d == 0, f"logits differ by {d}"
assert ca == cb, f"choices differ: {ca} vs {cb}"
print(f"logits bit for bit, choices {ca}")
PY
  ); then pass "$1" "$out"; else fail "$1" "$out"; fi
}

# Low thresholds so that this small step (160 tokens) is "large" and a rank at 1.05x is hot.
realb=(--precision-policy realb --realb-batch-threshold 100 --realb-hot-factor 1.05)
score bf16 --devices 2 || fail "bf16" "$(tail -2 "$work/bf16.err")"
for fmt in int8 q4; do
  score "one_realb_$fmt" --devices 2 "${realb[@]}" --low-precision $fmt || fail "one process realb $fmt" "$(tail -2 "$work/one_realb_$fmt.err")"
  "${mpi[@]}" "$sy" score -m "$m" --ids "$ids" --quiet --dump-logits "$work/ep_realb_$fmt.npy" \
    --precision-json "$work/ep_realb_$fmt.json" "${realb[@]}" --low-precision $fmt --ep-overlap \
    >/dev/null 2>"$work/ep.err" || fail "mpirun realb $fmt" "$(tail -3 "$work/ep.err")"
  same "realb $fmt: mpirun -np 2 == --devices 2 in one process" "ep_realb_$fmt" "one_realb_$fmt"
done
score one_low --devices 2 --precision-policy low-all || fail "one process low-all" "$(tail -2 "$work/one_low.err")"
"${mpi[@]}" "$sy" score -m "$m" --ids "$ids" --quiet --dump-logits "$work/ep_low.npy" \
  --precision-json "$work/ep_low.json" --precision-policy low-all >/dev/null 2>"$work/ep.err" \
  || fail "mpirun low-all" "$(tail -3 "$work/ep.err")"
same "low-all int8: mpirun -np 2 (blocking) == --devices 2" ep_low one_low

# The rule, recomputed: low iff tokens >= 100 and rows >= 1.05 x mean rows of the call (rows
# from the JSON: each rank's pairs; every token is routed to 2 experts, none dropped).
if out=$("$py" - "$work/one_realb_int8.json" <<'PY' 2>&1
import json, sys
ranks = json.load(open(sys.argv[1]))["ranks"]
calls = len(ranks[0]["records"])
switched = 0
for c in range(calls):
    rows = [r["records"][c]["rows"] for r in ranks]
    assert sum(rows) == 160 * 2, rows
    mean = sum(rows) / len(rows)
    for r, k in zip(rows, ranks):
        want = r > 0 and r >= 1.05 * mean
        assert k["records"][c]["low"] == want, (c, rows, k["records"][c])
        switched += want
assert 0 < switched < calls * len(ranks), switched  # the test must see both choices
print(f"{calls} layer calls x {len(ranks)} ranks: {switched} low, each as the rule says")
PY
); then pass "realb decisions follow the rule" "$out"; else fail "realb decisions follow the rule" "$out"; fi

# Low precision changes the arithmetic, within the format's error.
close() {  # close LABEL NAME MAX_REL_RMS
  local out
  if out=$("$py" - "$work/$2.npy" "$work/bf16.npy" "$3" <<'PY' 2>&1
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
r = float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2)))
assert 0 < r <= float(sys.argv[3]), f"relative RMS vs bf16 {r:.4g}"
print(f"relative RMS vs bf16 {r:.4g}")
PY
  ); then pass "$1" "$out"; else fail "$1" "$out"; fi
}
close "low-all int8 vs bf16" one_low 0.03
score one_nvfp4 --devices 2 --precision-policy low-all --low-precision nvfp4 || fail "nvfp4" "$(tail -2 "$work/one_nvfp4.err")"
close "low-all nvfp4 (emulated W4A4) vs bf16" one_nvfp4 0.25

# Modality tags: all tagged == untagged; none tagged: no rank switches.
score tag_all --devices 2 "${realb[@]}" --modality-ids 0-511 || fail "tags" "$(tail -2 "$work/tag_all.err")"
same "every token tagged == no tags" tag_all one_realb_int8
score tag_none --devices 2 "${realb[@]}" --modality-ids 100000-100001 || fail "tags" "$(tail -2 "$work/tag_none.err")"
if out=$("$py" -c "
import json, sys
j = json.load(open(sys.argv[1]))
low = sum(k['low_calls'] for k in j['ranks'])
why = {r['why'] for k in j['ranks'] for r in k['records']}
assert low == 0, low
print(f'no rank switched; reasons {sorted(why)}')" "$work/tag_none.json" 2>&1); then pass "no token tagged: nobody switches" "$out"; else fail "no token tagged: nobody switches" "$out"; fi

expect() {  # expect NAME NEEDLE -- command...
  local name="$1" needle="$2"
  shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$needle" <<<"$out"; then pass "$name" "exit $rc: $(grep -m1 -- "$needle" <<<"$out" | head -c 170)"
  else fail "$name" "exit $rc: $(tail -2 <<<"$out")"; fi
}
expect "realb in one process without --devices" "emulate N devices" -- "$sy" score -m "$m" --ids 1,2 --precision-policy realb
expect "unknown policy" "choose bf16" -- "$sy" score -m "$m" --ids 1,2 --precision-policy fp4
expect "unknown format" "choose int8" -- "$sy" score -m "$m" --ids 1,2 --precision-policy low-all --low-precision fp8
expect "modality tags without realb" "add --precision-policy realb" -- "$sy" score -m "$m" --ids 1,2 --modality-ids 1-5
expect "bad modality range" "ends before it starts" -- "$sy" score -m "$m" --ids 1,2 --devices 2 "${realb[@]}" --modality-ids 9-3
expect "int8 without the VNNI kernel" "q4 runs on every CPU" -- env SY_INT8_DOT=0 "$sy" score -m "$m" --ids 1,2 --precision-policy low-all
"$sy" make-tiny --out "$work/odd" --family mixtral --experts 4 --layers 1 --hidden 48 --expert-ffn 40 --vocab 64 --tokenizer none >/dev/null
expect "q4 on rows that are not whole blocks" "32-value blocks" -- "$sy" score -m "$work/odd" --ids 1,2 --precision-policy low-all --low-precision q4
echo "test_realb: $failures failure(s)"
[ "$failures" -eq 0 ]
