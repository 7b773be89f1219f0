#!/usr/bin/env bash
# The MoE families as Hugging Face transformers 5.17 itself writes them (tests/fixtures/hf5):
# for every family Switchyard runs, its logits on the fixture's prompt must match
# transformers' own (max |diff| / std(ref) <= 1e-5; float32 both sides) and its greedy
# continuation must equal transformers' generate(). All 15 families run.
# Usage: test_hf5_families.sh SWITCHYARD_BINARY WORK_DIR
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
fixtures="$here/../fixtures/hf5"
py=/usr/bin/python3
"$py" -c "import numpy" 2>/dev/null || { echo "SKIP: $py cannot import numpy" >&2; exit 77; }
rm -rf "$work" && mkdir -p "$work"

# Switchyard's greedy decoding: prints the prompt ids followed by N generated ones.
#   greedy_ids MODEL PROMPT N NAME
greedy_ids() {
  "$sy" generate -m "$1" --ids "$2" -n "$3" --ignore-eos --json "$work/$4.json" \
    >"$work/$4.gen" 2>&1
  "$py" -c "
import json, sys
s = json.load(open(sys.argv[1]))['sequences'][0]
print(','.join(str(i) for i in s['prompt_ids'] + s['ids']))" "$work/$4.json" 2>&1
}

supported=(mixtral qwen2_moe qwen3_moe olmoe dots1 glm4_moe granitemoe deepseek_v2 deepseek_v3 gpt_oss ernie4_5_moe phimoe
  hunyuan_v1_moe dbrx llama4_text)
failed=0
for fam in "${supported[@]}"; do
  dir="$fixtures/$fam"
  if ! "$sy" score -m "$dir" --ids "$(cat "$dir/ids.txt")" --dump-logits "$work/$fam.npy" \
      >"$work/$fam.log" 2>&1; then
    echo "FAIL $fam: score failed: $(tail -2 "$work/$fam.log")"
    failed=$((failed + 1))
    continue
  fi
  if ! "$py" - "$work/$fam.npy" "$dir/ref_logits.npy" "$fam" <<'PY'; then failed=$((failed + 1)); fi
import sys
import numpy as np
got, ref, fam = np.load(sys.argv[1]), np.load(sys.argv[2]), sys.argv[3]
if got.shape != ref.shape:
    print(f"FAIL {fam}: logits shape {got.shape}, transformers {ref.shape}")
    sys.exit(1)
err = float(np.abs(got - ref).max() / ref.std())
ok = err <= 1e-5
print(f"{'ok  ' if ok else 'FAIL'} {fam}: max |logit - transformers| / std = {err:.2e}")
sys.exit(0 if ok else 1)
PY
  want="$(cat "$dir/greedy.txt")"
  prompt="$(cut -d, -f1-8 <<<"$want")"
  got="$(greedy_ids "$dir" "$prompt" 12 "$fam")"
  if [ "$got" = "$want" ]; then
    echo "ok   $fam: greedy continuation equals transformers' generate()"
  else
    echo "FAIL $fam: greedy $got, transformers $want"
    failed=$((failed + 1))
  fi
done

# Expert parallelism: MLA's latent cache stays with each rank's own sequences, GPT-OSS's and
# Llama 4's rearranged experts load per rank (Llama 4's weights scale the rows sent), DBRX's
# fused experts are sliced per rank; the logits equal one process's.
if command -v mpirun >/dev/null; then
  for fam in deepseek_v3 gpt_oss llama4_text dbrx; do
    dir="$fixtures/$fam"
    mpirun --oversubscribe --allow-run-as-root -np 2 env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" \
      "$sy" score -m "$dir" --ids "$(cat "$dir/ids.txt")" --dump-logits "$work/ep_$fam.npy" \
      --ep-overlap >"$work/ep_$fam.log" 2>&1
    if ! "$py" -c "
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
err = float(np.abs(a - b).max() / b.std())
print(f'{\"ok  \" if err <= 1e-5 else \"FAIL\"} {sys.argv[3]} under mpirun -np 2: max |diff| / std vs one process = {err:.1e}')
sys.exit(0 if err <= 1e-5 else 1)" "$work/ep_$fam.npy" "$work/$fam.npy" "$fam"; then
      echo "FAIL $fam under mpirun: $(tail -2 "$work/ep_$fam.log")"
      failed=$((failed + 1))
    fi
  done
fi

# What a fixture does not reach, against an independent PyTorch forward (REF) that is itself
# checked on the fixture first: REF --make-variant writes a variant of it; Switchyard's logits on
# the variant (one score call over the fixture's 40 ids) must match REF's, and its greedy
# decoding (KV cache) of N tokens after the first P ids must equal REF's.
#   check_variant NAME REF FAMILY P N WHAT
check_variant() {
  local name="$1" ref="$2" fix="$fixtures/$3" p="$4" n="$5" what="$6"
  local ids var="$work/${name}_variant"
  ids="$(cat "$fix/ids.txt")"
  if ! { "$py" "$ref" --model "$fix" --ids "$ids" --out "$work/${name}_ref_fixture.npy" &&
    "$py" "$ref" --make-variant "$fix" "$var" &&
    "$py" "$ref" --model "$var" --ids "$ids" --out "$work/${name}_ref_variant.npy" &&
    "$sy" score -m "$var" --ids "$ids" --dump-logits "$work/${name}_variant.npy"; } \
    >"$work/$name.log" 2>&1; then
    echo "FAIL $name variant: $(tail -3 "$work/$name.log")"
    failed=$((failed + 1))
    return
  fi
  if ! "$py" - "$work" "$fix/ref_logits.npy" "$name" <<'PY'; then failed=$((failed + 1)); fi
import sys
import numpy as np
w, hf, name = sys.argv[1], np.load(sys.argv[2]), sys.argv[3]
ok = True
for what, got, ref in (("the reference on the fixture vs transformers", f"{w}/{name}_ref_fixture.npy", hf),
                       ("switchyard on the variant vs the reference", f"{w}/{name}_variant.npy",
                        np.load(f"{w}/{name}_ref_variant.npy"))):
    err = float(np.abs(np.load(got) - ref).max() / ref.std())
    print(f"{'ok  ' if err <= 1e-5 else 'FAIL'} {name}: {what}: max |diff| / std = {err:.2e}")
    ok &= err <= 1e-5
sys.exit(0 if ok else 1)
PY
  local prompt want got
  prompt="$(cut -d, -f1-"$p" <<<"$ids")"
  want="$("$py" "$ref" --model "$var" --ids "$prompt" --greedy "$n" 2>&1)"
  got="$(greedy_ids "$var" "$prompt" "$n" "$name")"
  if [ "$got" = "$want" ]; then
    echo "ok   $name variant: greedy decoding ($what) equals the reference's"
  else
    echo "FAIL $name variant: greedy $got, reference $want"
    failed=$((failed + 1))
  fi
}

# Llama 4: its fixture's layers all rotate, are all MoE, route top-1 with default RoPE; the
# variant has a NoPE layer (attention temperature), a dense layer, top-2, 8-position chunks and
# llama3 RoPE.
check_variant llama4 "$here/llama4_reference.py" llama4_text 8 12 \
  "KV cache, chunks, temperature"
# Phi-3.5-MoE: its fixture has default RoPE and router_jitter_noise 0; the variant has the
# published LongRoPE (original context 16: the 40 scored positions take the long factors,
# greedy decoding within 16 the short ones) and SparseMixer's margin 0.01. Decoding across the
# original context must be refused by name.
check_variant phimoe "$here/phimoe_reference.py" phimoe 4 10 "LongRoPE short factors"
promptp="$(cut -d, -f1-4 "$fixtures/phimoe/ids.txt")"
if out=$("$sy" generate -m "$work/phimoe_variant" --ids "$promptp" -n 20 --ignore-eos 2>&1); then
  echo "FAIL phimoe LongRoPE variant: decoding past the original 16 positions was accepted"
  failed=$((failed + 1))
elif grep -q "LongRoPE" <<<"$out"; then
  echo "ok   phimoe LongRoPE variant: decoding across the original context is refused by name"
else
  echo "FAIL phimoe LongRoPE variant: the error does not name LongRoPE: $out"
  failed=$((failed + 1))
fi

# GPT-OSS as OpenAI publishes it: MXFP4 experts (U8 blocks and E8M0 scales, written by
# tests/reference/gpt_oss_mxfp4.py from transformers' layout), against the same model with
# those experts dequantized to float32 by that script. With the float kernels (SY_INT8_DOT=0,
# which decode the blocks exactly) the logits must agree to float tolerance; the int8 kernels
# quantize activations to 8 bits, so there 90% of the positions must agree within 3% of the
# logits' spread (a token whose near-tied routing flips differs more).
gmx="$work/gpt_oss_mxfp4" gdq="$work/gpt_oss_dequant"
if "$py" "$here/gpt_oss_mxfp4.py" "$fixtures/gpt_oss" "$gmx" "$gdq" >"$work/mx.log" 2>&1 &&
  "$sy" score -m "$gdq" --ids "$(cat "$fixtures/gpt_oss/ids.txt")" \
    --dump-logits "$work/mx_dq.npy" >>"$work/mx.log" 2>&1 &&
  SY_INT8_DOT=0 "$sy" score -m "$gmx" --ids "$(cat "$fixtures/gpt_oss/ids.txt")" \
    --dump-logits "$work/mx_float.npy" >>"$work/mx.log" 2>&1 &&
  "$sy" score -m "$gmx" --ids "$(cat "$fixtures/gpt_oss/ids.txt")" \
    --dump-logits "$work/mx_int8.npy" >>"$work/mx.log" 2>&1; then
  if ! "$py" - "$work" <<'PY'; then failed=$((failed + 1)); fi
import sys
import numpy as np
w = sys.argv[1]
dq, fl, i8 = (np.load(f"{w}/mx_{n}.npy") for n in ("dq", "float", "int8"))
err = float(np.abs(fl - dq).max() / dq.std())
rows = np.abs(i8 - dq).max(axis=1) / dq.std()
close = float((rows <= 0.03).mean())
ok = err <= 1e-5 and close >= 0.9
print(f"{'ok  ' if ok else 'FAIL'} gpt_oss MXFP4 safetensors: float kernels {err:.1e} of the "
      f"dequantized model; int8 kernels: {close:.0%} of positions within 3% "
      f"(median {np.median(rows):.1e})")
sys.exit(0 if ok else 1)
PY
else
  echo "FAIL gpt_oss MXFP4 safetensors: $(tail -3 "$work/mx.log")"
  failed=$((failed + 1))
fi

# DBRX's fused layout, damaged: a Wqkv of the wrong shape, a tensor the layout does not have.
for damage in shape extra; do
  bad="$work/dbrx_$damage"
  rm -rf "$bad" && cp -r "$fixtures/dbrx" "$bad"
  "$py" - "$bad" "$damage" "$here" <<'PY'
import os, sys
sys.path.insert(0, sys.argv[3])
import numpy as np
import safetensors_np
d, damage = sys.argv[1], sys.argv[2]
w = safetensors_np.read_checkpoint(d)
if damage == "shape":
    n = "transformer.blocks.1.norm_attn_norm.attn.Wqkv.weight"
    w[n] = w[n][:-16]
else:
    w["transformer.blocks.0.ffn.experts.mlp.b1"] = np.zeros(4, np.float32)
safetensors_np.write_file(os.path.join(d, "model.safetensors"), w)
PY
  want=$([ $damage = shape ] && echo "blocks.1.norm_attn_norm.attn.Wqkv.weight" ||
    echo "blocks.0.ffn.experts.mlp.b1")
  if out=$("$sy" score -m "$bad" --ids 1,2,3 2>&1); then
    echo "FAIL dbrx ($damage): a damaged checkpoint was accepted"
    failed=$((failed + 1))
  elif grep -q "$want" <<<"$out"; then
    echo "ok   dbrx ($damage): refused, naming $want"
  else
    echo "FAIL dbrx ($damage): the error does not name $want: $out"
    failed=$((failed + 1))
  fi
done

if [ $failed -ne 0 ]; then echo "$failed hf5 family checks FAILED"; exit 1; fi
echo "all hf5 family checks passed"
