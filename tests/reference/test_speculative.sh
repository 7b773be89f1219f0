#!/usr/bin/env bash
# Batched and speculative decoding (`generate --prompts FILE`, `--draft DIR --draft-len k`):
#  - a batch of prompts decoded together gives each prompt what decoding it alone gives;
#  - greedy speculative decoding with the bundled draft model emits exactly plain greedy
#    decoding's tokens for k = 1, 3, 5 and auto (the cost model picks k), also under mpirun -np 2 (target experts over 2 ranks,
#    the draft on rank 0), and accepts a positive share of the draft's tokens;
#  - sampled speculative decoding keeps the target's distribution: 4000 sequences of a random
#    target, temperature 1, top-k 8, with two drafts: an unrelated random model (most proposals
#    rejected: the residual draws) and the target's own first layer (most accepted: the accept
#    path and the bonus token). Plain sampling's first token against the exact probabilities
#    numpy computes from the dumped logits (chi-square), then the joint (token 1, token 2),
#    token 3 and token 4 of each speculative run against an independent plain run (another
#    seed; two-sample chi-square), at significance 1e-4 with fixed seeds;
#  - bad input (a draft with another vocabulary or tokenizer, --draft-len 0, an empty prompts
#    file, a missing draft) is a clear error.
# Usage: test_speculative.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = a reference is missing.
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
py=/usr/bin/python3
rm -rf "$work" && mkdir -p "$work"
"$py" -c "import numpy, torch" 2>/dev/null || { echo "SKIP: $py cannot import numpy and torch"; exit 77; }
failures=0
pass() { echo "PASS [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }
target="$root/models/kjv-moe-9m"
draft="$root/models/kjv-draft-2m"

# ---- greedy: batch == alone, speculative == plain (one process and mpirun)
printf 'And God said\nIn the beginning\nThe LORD is my shepherd\nBlessed are the\nAnd it came to pass, when\nThen Jesus answered and said unto them,\n' >"$work/prompts.txt"
gen() {  # OUT.json [flags...]
  local j="$1"; shift
  "$sy" generate -m "$target" -n 40 --ignore-eos --json "$j" "$@" >/dev/null 2>"$j.err" \
    || { fail "generate $*" "$(tail -3 "$j.err")"; return 1; }
}
gen "$work/plain.json" --prompts "$work/prompts.txt"
i=0
while read -r line; do
  i=$((i + 1))
  gen "$work/alone$i.json" -p "$line"
done <"$work/prompts.txt"
for k in 1 3 5 auto; do gen "$work/spec$k.json" --prompts "$work/prompts.txt" --draft "$draft" --draft-len "$k"; done
mpi=(timeout 300 env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root)
if command -v mpirun >/dev/null; then
  "${mpi[@]}" -np 2 "$sy" generate -m "$target" -n 40 --ignore-eos --prompts "$work/prompts.txt" \
    --draft "$draft" --draft-len 3 --json "$work/mpi.json" >/dev/null 2>"$work/mpi.err" \
    || fail "mpirun generate --draft" "$(tail -3 "$work/mpi.err")"
fi
if out=$("$py" - "$work" <<'PY' 2>&1
import json, os, sys
w = sys.argv[1]
plain = json.load(open(f"{w}/plain.json"))["sequences"]
assert len(plain) == 6 and all(len(s["ids"]) == 40 for s in plain), "6 sequences of 40 tokens"
for i, s in enumerate(plain):
    alone = json.load(open(f"{w}/alone{i + 1}.json"))["sequences"][0]
    assert alone["prompt_ids"] == s["prompt_ids"], f"prompt {i + 1} tokenised differently"
    assert alone["ids"] == s["ids"], f"prompt {i + 1}: batch {s['ids'][:8]} != alone {alone['ids'][:8]}"
print("batch of 6 == each alone")
for name in ["spec1", "spec3", "spec5", "specauto"] + (["mpi"] if os.path.exists(f"{w}/mpi.json") else []):
    j = json.load(open(f"{w}/{name}.json"))
    for i, (a, b) in enumerate(zip(plain, j["sequences"])):
        assert a["ids"] == b["ids"], f"{name} sequence {i + 1}: {b['ids'][:10]} != plain {a['ids'][:10]}"
    assert 0 < j["accepted"] <= j["proposed"], (name, j["accepted"], j["proposed"])
    print(f"{name}: == plain greedy; {j['accepted']}/{j['proposed']} draft tokens accepted, "
          f"{j['target_calls']} target calls for {j['generated']} tokens")
PY
); then pass "greedy: batch == alone, speculative == plain" "$(tr '\n' ';' <<<"$out")"
else fail "greedy: batch == alone, speculative == plain" "$out"; fi

# ---- sampling keeps the target's distribution
t="$work/t"; d="$work/d"
"$sy" make-tiny --out "$t" --layers 2 --seed 1 --dtype F32 >/dev/null
"$sy" make-tiny --out "$d" --layers 1 --hidden 32 --seed 2 --dtype F32 >/dev/null
"$sy" make-tiny --out "$work/near" --layers 1 --seed 1 --dtype F32 >/dev/null  # t's first layer
yes "a b c" | head -4000 >"$work/same.txt"
samp=(-n 4 --ignore-eos --temperature 1 --top-k 8 --prompts "$work/same.txt")
"$sy" generate -m "$t" "${samp[@]}" --seed 5 --json "$work/s_plain.json" >/dev/null 2>"$work/s.err" || fail "sampling" "$(tail -2 "$work/s.err")"
"$sy" generate -m "$t" "${samp[@]}" --seed 100000 --draft "$d" --draft-len 3 --json "$work/s_far.json" >/dev/null 2>"$work/s.err" || fail "speculative sampling" "$(tail -2 "$work/s.err")"
"$sy" generate -m "$t" "${samp[@]}" --seed 200000 --draft "$work/near" --draft-len 3 --json "$work/s_near.json" >/dev/null 2>"$work/s.err" || fail "speculative sampling" "$(tail -2 "$work/s.err")"
pids=$("$py" -c "import json; print(','.join(map(str, json.load(open('$work/s_plain.json'))['sequences'][0]['prompt_ids'])))")
"$sy" score -m "$t" --ids "$pids" --quiet --dump-logits "$work/prompt_logits.npy" >/dev/null 2>&1
if out=$("$py" - "$work" <<'PY' 2>&1
import collections, json, sys
import numpy as np, torch
w = sys.argv[1]
plain = [s["ids"] for s in json.load(open(f"{w}/s_plain.json"))["sequences"]]
def pvalue(stat, df):
    return float(torch.special.gammaincc(torch.tensor(df / 2.0, dtype=torch.float64),
                                         torch.tensor(stat / 2.0, dtype=torch.float64)))
# Token 1 against the exact distribution: softmax over the 8 largest logits of the prompt's
# last position (temperature 1).
logits = np.load(f"{w}/prompt_logits.npy")[-1].astype(np.float64)
top = np.argsort(-logits, kind="stable")[:8]
p = np.exp(logits[top] - logits[top].max()); p /= p.sum()
for name, seqs in [("plain", plain)]:
    n = len(seqs)
    c = collections.Counter(s[0] for s in seqs)
    assert set(c) <= set(top.tolist()), f"{name}: token outside the top 8: {set(c) - set(top.tolist())}"
    obs = np.array([c[int(t)] for t in top], dtype=np.float64)
    stat = float(((obs - n * p) ** 2 / (n * p)).sum())
    pv = pvalue(stat, 7)
    assert pv > 1e-4, f"{name} token 1: chi2 {stat:.1f}, p = {pv:.2e}; observed {obs}, expected {n * p}"
    print(f"{name} token 1 vs exact: chi2 {stat:.1f} (7 dof), p = {pv:.3f}")
def two_sample(a, b, label):
    ca, cb = collections.Counter(a), collections.Counter(b)
    keys = [k for k in set(ca) | set(cb) if ca[k] + cb[k] >= 10]  # pool the rare cells
    ra = sum(ca[k] for k in set(ca) if k not in keys); rb = sum(cb[k] for k in set(cb) if k not in keys)
    table = np.array([[ca[k] for k in keys] + [ra], [cb[k] for k in keys] + [rb]], dtype=np.float64)
    table = table[:, table.sum(0) > 0]
    exp = table.sum(1, keepdims=True) * table.sum(0, keepdims=True) / table.sum()
    stat = float(((table - exp) ** 2 / exp).sum())
    df = table.shape[1] - 1
    pv = pvalue(stat, df)
    assert pv > 1e-4, f"{label}: chi2 {stat:.1f} ({df} dof), p = {pv:.2e}"
    print(f"{label} plain vs speculative: chi2 {stat:.1f} ({df} dof), p = {pv:.3f}")
for draft in ["far", "near"]:
    sj = json.load(open(f"{w}/s_{draft}.json"))
    spec = [s["ids"] for s in sj["sequences"]]
    share = sj["accepted"] / sj["proposed"]
    assert (share < 0.1) if draft == "far" else (share > 0.15), f"{draft} draft accepted {share:.2f}"
    two_sample([tuple(s[:2]) for s in plain], [tuple(s[:2]) for s in spec], f"{draft} draft (token 1, token 2)")
    two_sample([s[2] for s in plain], [s[2] for s in spec], f"{draft} draft token 3")
    two_sample([s[3] for s in plain], [s[3] for s in spec], f"{draft} draft token 4")
    print(f"{draft} draft: {sj['accepted']}/{sj['proposed']} draft tokens accepted")
PY
); then pass "sampling: speculative keeps the target's distribution" "$(tr '\n' ';' <<<"$out")"
else fail "sampling: speculative keeps the target's distribution" "$out"; fi

# ---- bad input
source "$here/expect_error.sh"
"$sy" make-tiny --out "$work/other_vocab" --layers 1 --vocab 300 --seed 3 >/dev/null
expect "draft with another vocabulary" "vocabulary has" -- "$sy" generate -m "$t" -p "a b" --draft "$work/other_vocab"
cp -r "$d" "$work/other_tok"
"$py" - "$work/other_tok/tokenizer.json" <<'PY'
import json, sys
t = json.load(open(sys.argv[1]))
v = t["model"]["vocab"]
a, b = list(v)[300], list(v)[301]
v[a], v[b] = v[b], v[a]  # same size, two ids swapped
json.dump(t, open(sys.argv[1], "w"))
PY
expect "draft with another tokenizer" "another tokenizer" -- "$sy" generate -m "$t" -p "a b" --draft "$work/other_tok"
expect "draft-len 0" "--draft-len must be" -- "$sy" generate -m "$t" -p "a b" --draft "$d" --draft-len 0
expect "draft-len words" "--draft-len must be" -- "$sy" generate -m "$t" -p "a b" --draft "$d" --draft-len fast
: >"$work/empty.txt"
expect "empty prompts file" "no prompts" -- "$sy" generate -m "$t" --prompts "$work/empty.txt"
expect "missing draft" "nowhere" -- "$sy" generate -m "$t" -p "a b" --draft "$work/nowhere"
expect "export into an existing folder" "exists; export writes a new folder" -- "$sy" export -m "$t" -o "$d"
expect "--tokenizer-from with --init" "keeps its own tokenizer" -- "$sy" train --init "$t" --tokenizer-from "$d" --corpus "$work/same.txt" --steps 1 --out "$work/bad_train"

echo "test_speculative: $failures failure(s)"
[ "$failures" -eq 0 ]
