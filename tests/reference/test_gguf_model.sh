#!/usr/bin/env bash
# GGUF models end to end, for every family GGUF supports (Mixtral as llama.cpp's `llama`,
# Qwen2-MoE with a gated shared expert, Qwen3-MoE, OLMoE):
#  - `switchyard quantize` writes F32 / BF16 / Q8_0 / Q4_0 files; an independent converter
#    (tests/reference/gguf_reference.py to-hf: numpy, from formats.md) turns each back into a
#    Hugging Face folder (names, expert split, the llama q / k permutation undone,
#    dequantization); Switchyard's logits on the GGUF file must equal its logits on that folder
#    (F32 / BF16 exactly; Q8_0 / Q4_0, computed on the blocks, to float rounding);
#  - Q8_0 / Q4_0 with the default int8 kernels (activations quantized per block) stay within a
#    few percent of the float kernels' logits;
#  - a BF16 GGUF gives the original checkpoint's logits bit for bit, and generates its text,
#    also through llama.cpp's tokenizer.ggml.* vocabulary instead of the embedded tokenizer.json;
#  - Q8_0 / Q4_0 experts (kept as blocks) offload from the file with unchanged logits;
#  - bad input: an architecture GGUF support lacks, a model with dense layers, an unknown type
#    are clear errors.
# usage: test_gguf_model.sh SWITCHYARD_BIN WORK_DIR
set -uo pipefail
sy="$1"
work="${2:-$(mktemp -d)}"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
"$py" -c "import numpy" 2>/dev/null || { echo "SKIP: needs $py with numpy" >&2; exit 77; }
rm -rf "$work" && mkdir -p "$work"
failures=0
pass() { echo "ok   [$1] $2"; }
fail() { echo "FAIL [$1] $2"; failures=$((failures + 1)); }
same() {  # same NAME A.npy B.npy TOLERANCE
  local out
  if out=$("$py" -c "
import numpy as np, sys
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
d = float(np.max(np.abs(a - b))) if a.shape == b.shape else float('inf')
print(f'{a.shape[0]} x {a.shape[1]} logits, max |diff| {d:.3g}')
sys.exit(0 if d <= float(sys.argv[3]) else 1)" "$2" "$3" "$4" 2>&1); then pass "$1" "$out"; else fail "$1" "$out"; fi
}
close() {  # close NAME A.npy B.npy MAX_RELATIVE_RMS (RMS of the difference over RMS of B)
  local out
  if out=$("$py" -c "
import numpy as np, sys
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
r = float(np.sqrt(np.mean((a - b) ** 2)) / np.sqrt(np.mean(b ** 2))) if a.shape == b.shape else float('inf')
top1 = float(np.mean(a.argmax(1) == b.argmax(1))) if a.shape == b.shape else 0.0
print(f'relative RMS difference {r:.4f}, same top-1 at {top1:.0%} of positions')
sys.exit(0 if r <= float(sys.argv[3]) else 1)" "$2" "$3" "$4" 2>&1); then pass "$1" "$out"; else fail "$1" "$out"; fi
}
ids=1,7,22,3,50,9,9,31,4,17,2,40,40,12
grep -qw avx512_bf16 /proc/cpuinfo && [ "${SY_BF16_DOT:-1}" != 0 ] && bf16_dot=1 || bf16_dot=0
declare -A extra=([mixtral]="" [qwen2_moe]="--shared-ffn 32" [qwen3_moe]="--head-dim 32" [olmoe]="")
for fam in mixtral qwen2_moe qwen3_moe olmoe; do
  m="$work/$fam"
  # shellcheck disable=SC2086
  "$sy" make-tiny --out "$m" --family "$fam" --dtype BF16 --vocab 300 --layers 2 ${extra[$fam]} >/dev/null
  # SY_BF16_DOT=0 in the exactness checks: float32 products of the weights as stored, what the
  # reference converter's folders (float32) get. The BF16 arithmetic is checked after the loop.
  SY_BF16_DOT=0 "$sy" score -m "$m" --ids "$ids" --quiet --dump-logits "$work/$fam.npy" >/dev/null
  types="F32 BF16 Q8_0 Q4_0"
  [ "$fam" = qwen2_moe ] && types+=" MXFP4_MOE"  # routed experts MXFP4, shared expert Q8_0
  for t in $types; do
    g="$work/$fam.$t.gguf"
    "$sy" quantize -m "$m" -o "$g" -t "$t" >/dev/null 2>"$work/err" || { fail "$fam $t" "quantize: $(tail -1 "$work/err")"; continue; }
    # SY_INT8_DOT=0: the float kernels, which compute on the blocks exactly as dequantized.
    SY_INT8_DOT=0 SY_BF16_DOT=0 "$sy" score -m "$g" --ids "$ids" --quiet --dump-logits "$work/$fam.$t.npy" >/dev/null 2>"$work/err" \
      || { fail "$fam $t" "score: $(tail -1 "$work/err")"; continue; }
    "$py" "$here/gguf_reference.py" to-hf "$g" "$work/$fam.$t.hf" "$m" 2>"$work/err" || { fail "$fam $t" "to-hf: $(tail -1 "$work/err")"; continue; }
    SY_BF16_DOT=0 "$sy" score -m "$work/$fam.$t.hf" --ids "$ids" --quiet --dump-logits "$work/$fam.$t.ref.npy" >/dev/null 2>"$work/err"
    same "$fam $t: GGUF vs the reference converter's folder" "$work/$fam.$t.npy" "$work/$fam.$t.ref.npy" 2e-5
    case "$t" in Q8_0|Q4_0|MXFP4_MOE)
      # The default int8 kernels quantize activations to 8 bits per block of 32 (as llama.cpp):
      # about 1% relative RMS on these random models, more where a top-k choice flips.
      "$sy" score -m "$g" --ids "$ids" --quiet --dump-logits "$work/$fam.$t.int8.npy" >/dev/null 2>"$work/err"
      close "$fam $t: int8 activations vs float kernels" "$work/$fam.$t.int8.npy" "$work/$fam.$t.npy" 0.15 ;;
    esac
  done
  same "$fam BF16 GGUF vs the original checkpoint (bit for bit)" "$work/$fam.npy" "$work/$fam.BF16.npy" 0
  # The default BF16 arithmetic (AVX512_BF16, ops/gemm_bf16.h) on both containers: the same
  # bits, and close to the float32 kernels (activations rounded to 8 significant bits).
  if [ "$bf16_dot" = 1 ]; then
    "$sy" score -m "$m" --ids "$ids" --quiet --dump-logits "$work/$fam.dot.npy" >/dev/null
    "$sy" score -m "$work/$fam.BF16.gguf" --ids "$ids" --quiet --dump-logits "$work/$fam.BF16.dot.npy" >/dev/null
    same "$fam BF16 arithmetic: GGUF vs the original checkpoint (bit for bit)" "$work/$fam.dot.npy" "$work/$fam.BF16.dot.npy" 0
    close "$fam BF16 arithmetic vs float32 kernels" "$work/$fam.dot.npy" "$work/$fam.npy" 0.02
  fi
done
a=$("$sy" generate -m "$work/mixtral" -p "a b c" -n 12 2>/dev/null | head -1)
b=$("$sy" generate -m "$work/mixtral.BF16.gguf" -p "a b c" -n 12 2>/dev/null | head -1)
if [ -n "$a" ] && [ "$a" = "$b" ]; then pass "generate from GGUF" "$b"; else fail "generate from GGUF" "'$a' vs '$b'"; fi
# Without tokenizer.huggingface.json (the key renamed), the text goes through llama.cpp's
# tokenizer.ggml.* vocabulary that quantize wrote: the same tokens, the same text.
"$py" - "$work/mixtral.BF16.gguf" "$work/ggml_vocab.gguf" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
assert b.count(b"tokenizer.huggingface.json") == 1
open(sys.argv[2], "wb").write(b.replace(b"tokenizer.huggingface.json", b"tokenizer.huggingface.jsoX"))
PY
c=$("$sy" generate -m "$work/ggml_vocab.gguf" -p "a b c" -n 12 2>"$work/err" | head -1)
if [ -n "$a" ] && [ "$a" = "$c" ]; then pass "generate through tokenizer.ggml.*" "$c"; else fail "generate through tokenizer.ggml.*" "'$a' vs '$c' $(tail -1 "$work/err")"; fi
text="In the beginning 1234, it's  two  spaces and café"
t1=$("$sy" tokenize -m "$work/mixtral" --text "$text" 2>&1)
t2=$("$sy" tokenize -m "$work/ggml_vocab.gguf" --text "$text" 2>&1)
if [ -n "$t1" ] && [ "$t1" = "$t2" ]; then pass "tokenize through tokenizer.ggml.*" "$t2"; else fail "tokenize through tokenizer.ggml.*" "'$t1' vs '$t2'"; fi

expect() {  # expect NAME NEEDLE -- command...
  local name="$1" needle="$2"
  shift 3
  local out rc
  out=$("$@" 2>&1); rc=$?
  if [ $rc -ne 0 ] && [ $rc -lt 128 ] && grep -q -- "$needle" <<<"$out"; then pass "$name" "exit $rc: $(grep -m1 -- "$needle" <<<"$out" | head -c 160)"
  else fail "$name" "exit $rc: $(tail -2 <<<"$out")"; fi
}
"$py" - "$work/mixtral.F32.gguf" "$work/gpt2.gguf" <<'PY'
import sys
b = open(sys.argv[1], "rb").read()
i = b.find(b"llama")  # general.architecture's value (its length prefix stays 5)
open(sys.argv[2], "wb").write(b[:i] + b"gpt2x" + b[i + 5:])
PY
expect "unsupported architecture" "GGUF architecture 'gpt2x' is not supported" -- "$sy" score -m "$work/gpt2.gguf" --ids "$ids"
"$sy" make-tiny --out "$work/dense" --family qwen2_moe --dense-layers 1 --layers 2 --vocab 300 >/dev/null
expect "dense layers" "has dense layers" -- "$sy" quantize -m "$work/dense" -o "$work/dense.gguf"
[ ! -e "$work/dense.gguf" ] || fail "dense layers" "a file was left behind"
# Q4_K_M: llama.cpp's mix (Q4_K, Q6_K for output.weight and attn_v / ffn_down in the layers it
# gives more bits: of 4 layers, 2 and 3); K blocks hold 256 values, so a model with rows of 256.
"$sy" make-tiny --out "$work/k" --hidden 256 --expert-ffn 256 --vocab 300 --layers 4 >/dev/null
"$sy" quantize -m "$work/k" -o "$work/k.gguf" -t Q4_K_M >/dev/null 2>"$work/err" || fail "Q4_K_M" "quantize: $(tail -1 "$work/err")"
types=$("$py" -c "
import sys; sys.path.insert(0, sys.argv[2]); import gguf_reference as g
r = g.Reader(sys.argv[1]); t = {n: g.TYPES[v[1]][0] for n, v in r.tensors.items()}
ok = t['output.weight'] == 'Q6_K' and t['blk.0.attn_v.weight'] == 'Q4_K' and t['blk.2.attn_v.weight'] == 'Q6_K' \
     and t['blk.1.attn_v.weight'] == 'Q4_K' and t['blk.1.ffn_gate_exps.weight'] == 'Q4_K' and t['blk.2.ffn_down_exps.weight'] == 'Q6_K' and t['blk.3.ffn_down_exps.weight'] == 'Q6_K'
print(sorted(set(t.values())), 'mix as llama.cpp' if ok else 'NOT the Q4_K_M mix')" "$work/k.gguf" "$here")
case "$types" in *"mix as llama.cpp"*) pass "Q4_K_M: tensor types" "$types" ;; *) fail "Q4_K_M: tensor types" "$types" ;; esac
SY_INT8_DOT=0 "$sy" score -m "$work/k.gguf" --ids "$ids" --quiet --dump-logits "$work/k.npy" >/dev/null 2>"$work/err"
"$py" "$here/gguf_reference.py" to-hf "$work/k.gguf" "$work/k.hf" "$work/k" 2>"$work/err" || fail "Q4_K_M" "to-hf: $(tail -1 "$work/err")"
"$sy" score -m "$work/k.hf" --ids "$ids" --quiet --dump-logits "$work/k.ref.npy" >/dev/null 2>"$work/err"
same "Q4_K_M: GGUF vs the reference converter's folder" "$work/k.npy" "$work/k.ref.npy" 2e-5
"$sy" score -m "$work/k.gguf" --ids "$ids" --quiet --dump-logits "$work/k.int8.npy" >/dev/null 2>"$work/err"
close "Q4_K_M: int8 activations vs float kernels" "$work/k.int8.npy" "$work/k.npy" 0.15
# MXFP4_MOE: llama.cpp's mix (its LLAMA_FTYPE_MOSTLY_MXFP4_MOE): stacked experts MXFP4, the
# other matrices Q8_0, norms and routers F32.
types=$("$py" -c "
import sys; sys.path.insert(0, sys.argv[2]); import gguf_reference as g
r = g.Reader(sys.argv[1]); t = {n: g.TYPES[v[1]][0] for n, v in r.tensors.items()}
ok = all((v == 'MXFP4') == ('_exps.' in n) for n, v in t.items() if v != 'F32') \
     and t['blk.0.ffn_up_shexp.weight'] == 'Q8_0' and t['blk.1.attn_q.weight'] == 'Q8_0' and t['blk.0.ffn_gate_inp.weight'] == 'F32'
print(sorted(set(t.values())), 'mix as llama.cpp' if ok else 'NOT the MXFP4_MOE mix')" "$work/qwen2_moe.MXFP4_MOE.gguf" "$here")
case "$types" in *"mix as llama.cpp"*) pass "MXFP4_MOE: tensor types" "$types" ;; *) fail "MXFP4_MOE: tensor types" "$types" ;; esac
# Q8_0 / Q4_0 experts stay in the file as blocks: they can be offloaded, with the same logits.
for t in Q8_0 Q4_0; do
  "$sy" score -m "$work/qwen2_moe.$t.gguf" --ids "$ids" --quiet --expert-cache-mb 0.05 \
    --dump-logits "$work/off.$t.npy" >/dev/null 2>"$work/err" || fail "offloaded $t" "$(tail -1 "$work/err")"
  same "qwen2_moe $t: offloaded experts vs resident (bit for bit)" "$work/qwen2_moe.$t.int8.npy" "$work/off.$t.npy" 0
done
expect "unknown type" "choose F32, F16, BF16, Q8_0, Q4_0" -- "$sy" quantize -m "$work/mixtral" -o "$work/x.gguf" -t Q5_K
expect "tokenize without text" "give the text" -- "$sy" tokenize -m "$work/mixtral"
echo "test_gguf_model: $failures failure(s)"
[ "$failures" -eq 0 ]
