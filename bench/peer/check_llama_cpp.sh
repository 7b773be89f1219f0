#!/usr/bin/env bash
# Agreement with llama.cpp on the same GGUF files (issue 18), not part of CI (it needs the npm
# peer, bench/peer/install.sh, and Node.js >= 20):
#  - logits: for each family GGUF carries and each weight type, `make-tiny` + `quantize`, then
#    Switchyard's `score --dump-logits` against llama.cpp's raw logits for the same token ids;
#  - tokens: `switchyard tokenize` against llama.cpp's tokenizer on held-out KJV text, for the
#    bundled model's byte-level BPE (tokenizer.ggml.* with pre type qwen2) and for each family's
#    make-tiny tokenizer.
# Writes a Markdown table (default bench/results/llama_cpp_agreement.md).
#
#   bench/peer/check_llama_cpp.sh [--types F32,BF16,Q8_0,Q4_0,Q4_K_M,Q6_K] [--out FILE.md]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
types=F32,BF16,Q8_0,Q4_0,Q4_K_M,Q6_K
out="$root/bench/results/llama_cpp_agreement.md"
while [ $# -gt 0 ]; do
  case "$1" in
    --types) types="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "check_llama_cpp.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
"$here/install.sh"
peer=(node "$here/llama_cpp_peer.mjs")
py=/usr/bin/python3
work="${CHECK_WORK:-$(mktemp -d)}"
mkdir -p "$work"
ids=1,7,22,3,50,9,9,31,4,17,2,40,40,12,250,251,5,6,77,100
# OLMoE as published has no GQA; llama.cpp sizes its k_norm for that (n_embd).
declare -A extra=([mixtral]="" [qwen2_moe]="--shared-ffn 256" [qwen3_moe]="--head-dim 32" [olmoe]="--kv-heads 4")
IFS=, read -r -a type_list <<< "$types"

{
  echo "# Switchyard vs llama.cpp: agreement on the same GGUF files"
  echo
  echo "Made by \`bench/peer/check_llama_cpp.sh\`. llama.cpp: node-llama-cpp 3.22.1's prebuilt CPU"
  echo "build from npm. Models: \`make-tiny --family F --vocab 300 --layers 2 --hidden 256 --expert-ffn 256\`"
  echo "(random weights), written by \`switchyard quantize --type T\`; token ids ${ids//,/ }, no BOS."
  echo "Relative RMS = RMS(Switchyard - llama.cpp) / RMS(llama.cpp) over all positions' logits."
  echo
  echo "| family | weights | positions x vocab | max abs diff | relative RMS | same top-1 |"
  echo "|---|---|---|---:|---:|---:|"
} > "$out.tmp"
for fam in mixtral qwen2_moe qwen3_moe olmoe; do
  m="$work/$fam"
  # shellcheck disable=SC2086
  [ -d "$m" ] || "$sy" make-tiny --out "$m" --family "$fam" --dtype BF16 --vocab 300 --layers 2 --hidden 256 --expert-ffn 256 \
    ${extra[$fam]} > /dev/null
  for t in "${type_list[@]}"; do
    g="$work/$fam.$t.gguf"
    "$sy" quantize -m "$m" -o "$g" -t "$t" > /dev/null
    "$sy" score -m "$g" --ids "$ids" --quiet --dump-logits "$work/sy.npy" > /dev/null 2>&1
    "${peer[@]}" logits --model "$g" --ids "$ids" > "$work/peer.json"
    "$py" - "$work/sy.npy" "$work/peer.json" "$fam" "$t" >> "$out.tmp" <<'EOF'
import json, sys
import numpy as np
a = np.load(sys.argv[1]).astype(np.float64)
b = np.array(json.load(open(sys.argv[2]))["logits"], dtype=np.float64)
if a.shape != b.shape:
    print(f"| {sys.argv[3]} | {sys.argv[4]} | shapes differ: {a.shape} vs {b.shape} | | | |")
    sys.exit(0)
d = np.abs(a - b)
rel = np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2))
top1 = np.mean(a.argmax(1) == b.argmax(1))
print(f"| {sys.argv[3]} | {sys.argv[4]} | {a.shape[0]} x {a.shape[1]} | {d.max():.2e} | {rel:.2e} | {top1:.0%} |")
EOF
  done
done

# Tokens: held-out KJV text (the validation split the bundled model never trained on).
"$sy" quantize -m "$root/models/kjv-moe-9m" -o "$work/kjv.gguf" -t Q8_0 > /dev/null
"$py" - "$work/kjv.gguf" "$work/kjv.vocab.gguf" <<'EOF'
import sys
b = open(sys.argv[1], "rb").read()
open(sys.argv[2], "wb").write(b.replace(b"tokenizer.huggingface.json", b"tokenizer.huggingface.jsoX"))
EOF
"$sy" train --out "$work/split" --export-corpus "$work/split" > /dev/null
head -c 30000 "$work/split/validation.txt" > "$work/kjv.txt"
printf '%s' "In the beginning God created the heaven and the earth. 1234567 3.14 it's they'll  two  spaces
tabs	and unicode: café über 中文 😀 <|endoftext|> end" > "$work/edge.txt"
{
  echo
  echo "## Tokenization"
  echo
  echo "Switchyard reads the GGUF's tokenizer.ggml.* vocabulary (its tokenizer.huggingface.json"
  echo "renamed away); llama.cpp reads the same keys. kjv: the first 30000 bytes of the held-out"
  echo "KJV split (train --export-corpus); edge: digits, contractions, runs of spaces, tabs,"
  echo "non-ASCII, emoji and a special token."
  echo
  echo "| vocabulary | text | tokens | identical |"
  echo "|---|---|---:|---|"
} >> "$out.tmp"
for f in edge kjv; do
  "$sy" tokenize -m "$work/kjv.vocab.gguf" -f "$work/$f.txt" --no-special > "$work/sy.ids"
  "${peer[@]}" tokenize --model "$work/kjv.vocab.gguf" --text-file "$work/$f.txt" > "$work/peer.ids"
  "$py" - "$work/sy.ids" "$work/peer.ids" "kjv-moe-9m (gpt2, qwen2)" "$f" >> "$out.tmp" <<'EOF'
import json, sys
a = [int(x) for x in open(sys.argv[1]).read().strip().split(",") if x]
b = json.load(open(sys.argv[2]))["ids"]
first = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), None)
same = a == b
note = "yes" if same else f"no: {len(a)} vs {len(b)} tokens, first difference at {first}"
print(f"| {sys.argv[3]} | {sys.argv[4]} | {len(b)} | {note} |")
EOF
done
mv "$out.tmp" "$out"
cat "$out"
