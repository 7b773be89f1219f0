#!/usr/bin/env bash
# Compares Switchyard's tokenizer with Hugging Face's own JavaScript implementation
# (@huggingface/tokenizers, tests/tokenizer/package.json): trains several tokenizers with
# Switchyard's BPE trainer (byte-level with GPT-2 / Qwen2 / Llama-3 / DeepSeek-like
# pre-tokenizers, SentencePiece-style with byte fallback; special tokens added), then checks
# that both implementations give the same ids (and decoded text) for a varied Unicode sample.
# Some variants put a Unicode normalizer in front of the trained file's own (NFC as in Qwen2's
# tokenizer.json, NFKC, NFD, NFKD, NFKC + Lowercase); sample_normalization.txt holds decomposed
# sequences, singletons, ligatures, full-width forms and jamo, so normalization changes the ids.
# usage: test_tokenizer_hf.sh SWITCHYARD_BIN WORK_DIR   (sy_tokenize from $SY_TOKENIZE or next to WORK_DIR)
# Exit: 0 all equal, 1 mismatch or error, 77 node or the npm package missing (CTest: skipped).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${2:-$(mktemp -d)}"
mkdir -p "$work"
tool="${SY_TOKENIZE:-$(dirname "$work")/sy_tokenize}"
js_dir="$here/tokenizer"
sample="$js_dir/sample_unicode.txt"
sample_norm="$js_dir/sample_normalization.txt"

if ! command -v node >/dev/null 2>&1; then
  echo "SKIP: test_tokenizer_hf needs node (install nodejs, or run scripts/install-deps.sh)" >&2
  exit 77
fi
if [ ! -d "$js_dir/node_modules/@huggingface/tokenizers" ]; then
  echo "SKIP: test_tokenizer_hf needs @huggingface/tokenizers: run (cd tests/tokenizer && npm install)" >&2
  exit 77
fi
[ -x "$tool" ] || { echo "FAIL: sy_tokenize not found at $tool (build target sy_tokenize)" >&2; exit 1; }

# Corpus: the KJV Bible if a plain-text copy is installed (bible-kjv-text ships only a
# compressed database), else the licence texts every Debian system has, plus the sample.
corpus="$work/corpus.txt"
bible=""
if command -v dpkg >/dev/null 2>&1; then
  bible="$(dpkg -L bible-kjv-text 2>/dev/null | grep -iE '\.txt$' | head -n 1 || true)"
fi
if [ -n "$bible" ] && [ -f "$bible" ]; then
  echo "corpus: $bible"
  cat "$bible" "$sample" > "$corpus"
else
  echo "corpus: /usr/share/common-licenses + sample (no plain-text Bible installed)"
  cat /usr/share/common-licenses/* "$sample" 2>/dev/null > "$corpus" || cp "$sample" "$corpus"
fi

specials=(--special '<|endoftext|>' --special '<|im_start|>' --special '<|im_end|>')
# name|sy_tokenize train flags[|normalizers put in front of the file's normalizer, comma-separated]
variants=(
  "bytelevel-qwen2|--style bytelevel --preset qwen2 --vocab 4096"
  "bytelevel-llama3|--style bytelevel --preset llama3 --vocab 4096"
  "bytelevel-gpt2|--style bytelevel --preset gpt2 --vocab 4096"
  "bytelevel-deepseek|--style bytelevel --preset deepseek --vocab 4096"
  "bytelevel-qwen2-small|--style bytelevel --preset qwen2 --vocab 300"
  "sentencepiece|--style sentencepiece --vocab 4096"
  "sentencepiece-small|--style sentencepiece --vocab 400"
  "bytelevel-qwen2-nfc|--style bytelevel --preset qwen2 --vocab 4096|NFC"
  "bytelevel-qwen2-nfkc|--style bytelevel --preset qwen2 --vocab 4096|NFKC"
  "bytelevel-gpt2-nfd|--style bytelevel --preset gpt2 --vocab 4096|NFD"
  "sentencepiece-nfkd|--style sentencepiece --vocab 4096|NFKD"
  "bytelevel-llama3-nfkc-lowercase|--style bytelevel --preset llama3 --vocab 4096|NFKC,Lowercase"
)

# with_normalizers JSON_IN JSON_OUT TYPES: a copy of JSON_IN whose normalizer is TYPES (comma-
# separated, e.g. NFKC,Lowercase) followed by the file's own normalizer, in one Sequence.
with_normalizers() {
  node - "$@" <<'JS'
const fs = require("fs");
const [inPath, outPath, types] = process.argv.slice(2);
const tok = JSON.parse(fs.readFileSync(inPath, "utf8"));
const steps = types.split(",").map((type) => ({ type }));
if (tok.normalizer) steps.push(tok.normalizer);
tok.normalizer = steps.length === 1 ? steps[0] : { type: "Sequence", normalizers: steps };
fs.writeFileSync(outPath, JSON.stringify(tok, null, 1));
JS
}

# Text files compared per tokenizer: the sample, and a few edge cases.
texts=("$sample" "$sample_norm")
printf ' ' > "$work/one_space.txt"; texts+=("$work/one_space.txt")
printf '\n\n  \t x' > "$work/whitespace.txt"; texts+=("$work/whitespace.txt")
printf '<|endoftext|>' > "$work/only_special.txt"; texts+=("$work/only_special.txt")

failures=0
for v in "${variants[@]}"; do
  name="${v%%|*}"
  rest="${v#*|}"
  normalizers=""
  [[ "$rest" == *"|"* ]] && normalizers="${rest#*|}"
  read -r -a flags <<< "${rest%%|*}"
  json="$work/$name.json"
  "$tool" train "${flags[@]}" "${specials[@]}" "$corpus" "$json"
  [ -n "$normalizers" ] && with_normalizers "$json" "$json" "$normalizers"
  for text in "${texts[@]}"; do
    base="$(basename "$text" .txt)"
    "$tool" encode "$json" "$text" > "$work/$name.$base.sy.json"
    (cd "$js_dir" && node hf_encode.mjs "$json" "$text") > "$work/$name.$base.hf.json"
    if ! node - "$work/$name.$base.sy.json" "$work/$name.$base.hf.json" "$name/$base" <<'JS'
const fs = require("fs");
const [syPath, hfPath, label] = process.argv.slice(2);
const sy = JSON.parse(fs.readFileSync(syPath, "utf8")), hf = JSON.parse(fs.readFileSync(hfPath, "utf8"));
const n = Math.max(sy.ids.length, hf.ids.length);
for (let i = 0; i < n; ++i) {
  if (sy.ids[i] !== hf.ids[i]) {
    console.error(`MISMATCH ${label}: first difference at position ${i} of ${sy.ids.length} (switchyard) / ${hf.ids.length} (hf)`);
    console.error(`  switchyard: ${JSON.stringify(sy.ids.slice(Math.max(0, i - 3), i + 5))}`);
    console.error(`  hf:         ${JSON.stringify(hf.ids.slice(Math.max(0, i - 3), i + 5))}`);
    process.exit(1);
  }
}
if (sy.decoded !== hf.decoded) {
  let i = 0;
  while (i < sy.decoded.length && sy.decoded[i] === hf.decoded[i]) ++i;
  console.error(`MISMATCH ${label}: decoded text differs at character ${i}:`);
  console.error(`  switchyard: ${JSON.stringify(sy.decoded.slice(i, i + 40))}`);
  console.error(`  hf:         ${JSON.stringify(hf.decoded.slice(i, i + 40))}`);
  process.exit(1);
}
console.log(`ok ${label}: ${sy.ids.length} ids equal`);
JS
    then
      failures=$((failures + 1))
    fi
  done
done
if [ "$failures" -gt 0 ]; then
  echo "FAIL: $failures comparison(s) differ from Hugging Face tokenizers.js" >&2
  exit 1
fi
echo "PASS: Switchyard tokenizer == @huggingface/tokenizers on ${#variants[@]} tokenizers x ${#texts[@]} texts"
