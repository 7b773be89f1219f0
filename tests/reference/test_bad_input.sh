#!/usr/bin/env bash
# Bad input gets a clear error naming what is wrong, a non-zero exit (1 for input errors,
# 2+ for usage errors from the flag parser), never a crash (signal) or a hang.
# Usage: test_bad_input.sh SWITCHYARD_BINARY WORK_DIR
set -uo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
rm -rf "$work" && mkdir -p "$work"
good="$work/good"
"$sy" make-tiny --family qwen3_moe --out "$good" --vocab 300 --tokenizer none --dtype BF16 >/dev/null || exit 1
failures=0
ids="1,2,3"

source "$(dirname "$0")/expect_error.sh"

# A fresh copy of the good checkpoint to break.
copy() { rm -rf "$work/$1"; cp -r "$good" "$work/$1"; echo "$work/$1"; }
edit_header() {  # edit_header FILE PYTHON_EXPR_ON_HEADER_DICT (h)
  /usr/bin/python3 "$here/bad_input_checks.py" edit-header "$1" "$2"
}

d=$(copy truncated); size=$(stat -c %s "$d/model.safetensors"); truncate -s $((size - 100)) "$d/model.safetensors"
expect truncated_file "$d/model.safetensors" -- "$sy" score --model "$d" --ids $ids

d=$(copy short); truncate -s 5 "$d/model.safetensors"
expect shorter_than_header "$d/model.safetensors" -- "$sy" score --model "$d" --ids $ids

d=$(copy lying_offsets)
edit_header "$d/model.safetensors" 'h["model.norm.weight"]["data_offsets"][0] += 2; h["model.norm.weight"]["data_offsets"][1] += 2'
expect offsets_lie "$d/model.safetensors" "model.norm.weight" -- "$sy" score --model "$d" --ids $ids

d=$(copy wrong_dtype)
edit_header "$d/model.safetensors" 'h["model.norm.weight"]["dtype"] = "I16"'
expect wrong_dtype "model.norm.weight" "I16" -- "$sy" score --model "$d" --ids $ids

d=$(copy size_mismatch)
edit_header "$d/model.safetensors" 'h["model.norm.weight"]["dtype"] = "F32"'
expect dtype_size_mismatch "model.norm.weight" -- "$sy" score --model "$d" --ids $ids

d=$(copy missing_tensor)
edit_header "$d/model.safetensors" 'h["model.layers.1.mlp.experts.3.up_proj.weightX"] = h.pop("model.layers.1.mlp.experts.3.up_proj.weight")'
expect missing_tensor "model.layers.1.mlp.experts.3.up_proj.weight" "$d" -- "$sy" score --model "$d" --ids $ids

d=$(copy shape_mismatch)
sed -i 's/"moe_intermediate_size": 96/"moe_intermediate_size": 97/' "$d/config.json"
expect shape_mismatch "model.layers.0.mlp.experts.0.gate_proj.weight" "[96, 64]" "[97, 64]" -- "$sy" score --model "$d" --ids $ids

d=$(copy unknown_arch)
sed -i 's/Qwen3MoeForCausalLM/GPTBananaForCausalLM/' "$d/config.json"
expect unknown_architecture "GPTBananaForCausalLM" "config.json" -- "$sy" score --model "$d" --ids $ids

d=$(copy bad_config_json)
echo '{"architectures": [' > "$d/config.json"
expect malformed_config "config.json" -- "$sy" inspect --model "$d"

d=$(copy topk_too_big)
sed -i 's/"num_experts_per_tok": 2/"num_experts_per_tok": 9/' "$d/config.json"
expect topk_exceeds_experts "num_experts_per_tok" -- "$sy" inspect --model "$d"

expect missing_dir "does not exist" -- "$sy" score --model "$work/nope" --ids $ids
expect empty_prompt "prompt" -- "$sy" generate --model "$good" --prompt ""
expect token_out_of_range "token id 5000" -- "$sy" score --model "$good" --ids 1,5000
expect bad_ids "not a non-negative token id" -- "$sy" score --model "$good" --ids 1,x
expect no_tokenizer "tokenizer.json" -- "$sy" generate --model "$good" --prompt "hello"
expect unknown_flag "--bogus" -- "$sy" generate --model "$good" --ids 1 --bogus
expect unknown_command "nonsense" -- "$sy" nonsense

# ScMoE: an unknown shortcut position or gate, a missing ScMoE key, a shortcut on layer 0.
sc="$work/scmoe_good"
"$sy" make-tiny --family scmoe --out "$sc" --vocab 300 --tokenizer none --layers 4 >/dev/null || exit 1
d="$work/scmoe_pos9"; rm -rf "$d"; cp -r "$sc" "$d"; sed -i 's/"scmoe_shortcut": "pos2"/"scmoe_shortcut": "pos9"/' "$d/config.json"
expect scmoe_unknown_position "pos9" "none, pos1, pos2 or pos3" -- "$sy" score --model "$d" --ids $ids
d="$work/scmoe_cg7"; rm -rf "$d"; cp -r "$sc" "$d"; sed -i 's/"scmoe_combine": "cg1"/"scmoe_combine": "cg7"/' "$d/config.json"
expect scmoe_unknown_gate "scmoe_combine" "cg7" -- "$sy" score --model "$d" --ids $ids
d="$work/scmoe_nokey"; rm -rf "$d"; cp -r "$sc" "$d"; sed -i 's/"scmoe_combine": "cg1",\{0,1\}//' "$d/config.json"
expect scmoe_missing_key "scmoe_combine" "missing" -- "$sy" score --model "$d" --ids $ids
d="$work/scmoe_layer0"; rm -rf "$d"; cp -r "$sc" "$d"; sed -i 's/"decoder_sparse_step": 2/"decoder_sparse_step": 1/' "$d/config.json"
expect scmoe_shortcut_on_layer0 "layer 0" "no preceding layer" -- "$sy" score --model "$d" --ids $ids
expect scmoe_bad_flag "pos9" -- "$sy" make-tiny --family scmoe --out "$work/x" --scmoe-shortcut pos9
expect ep_link_negative "--ep-link-gbps" -- "$sy" bench --model "$sc" --ep-link-gbps -1

# Writing into a directory that does not exist fails without leaving a file behind.
expect dump_into_missing_dir "$work/nodir/x.npy" -- "$sy" score --model "$good" --ids $ids --quiet --dump-logits "$work/nodir/x.npy"
if ls "$work"/nodir* >/dev/null 2>&1; then echo "FAIL [no_partial_file] something was left behind"; failures=$((failures+1)); fi

echo "bad-input checks: $failures failed"
[ $failures -eq 0 ]
