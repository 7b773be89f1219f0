#!/usr/bin/env bash
# Switchyard's logits on tiny random checkpoints of every supported family (awkward shapes:
# expert counts that are not powers of two, top-k 1 and 3, odd head counts, shared experts,
# dense leading layers, group-limited routing, fused/sharded files, F32/F16/BF16, ScMoE's
# shortcut positions and branch gates, with MoE in every or every second layer) must match
# the independent PyTorch reference (tests/reference/hf_reference.py), and the per-layer
# expert loads must equal the reference's routing.
# Usage: test_logits_vs_torch.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = reference missing.
set -euo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
if ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
# The reference multiplies BF16 weights with float32 activations: Switchyard's float32 path
# (SY_BF16_DOT=0; its BF16 arithmetic is checked against this path in test_gguf_model).
export SY_BF16_DOT=0

# name | make-tiny flags
cases=(
  "mixtral_e6_k3_bf16|--family mixtral --experts 6 --top-k 3 --heads 3 --kv-heads 1 --head-dim 16 --hidden 48 --dtype BF16"
  "mixtral_k1_f16_tied_sharded|--family mixtral --experts 4 --top-k 1 --tie-embeddings --shards 2 --dtype F16"
  "qwen2_moe_shared_dense|--family qwen2_moe --experts 5 --top-k 2 --shared-ffn 80 --dense-layers 1 --dense-ffn 72 --norm-topk 0 --dtype F32"
  "qwen3_moe_fused_k3|--family qwen3_moe --experts 7 --top-k 3 --heads 5 --kv-heads 1 --head-dim 8 --hidden 40 --fused-experts --dtype BF16"
  "olmoe_clip|--family olmoe --experts 6 --top-k 2 --clip-qkv 2.0 --heads 4 --kv-heads 4 --dtype BF16"
  "dots1_groups|--family dots1 --experts 8 --top-k 3 --groups 4 --topk-groups 2 --dense-layers 1 --shared-ffn 64 --expert-ffn 32 --routed-scale 2.5 --layers 3 --dtype BF16"
  "dots1_flat_norenorm|--family dots1 --experts 6 --top-k 2 --norm-topk 0 --expert-ffn 32 --shared-ffn 32 --dtype F32"
  "scmoe_pos2_cg1|--family scmoe --experts 6 --layers 4 --scmoe-shortcut pos2 --scmoe-combine cg1 --dtype F32"
  "scmoe_pos3_cg2_k2|--family scmoe --experts 5 --top-k 2 --layers 4 --scmoe-shortcut pos3 --scmoe-combine cg2 --dtype BF16"
  "scmoe_pos1_add_every|--family scmoe --experts 4 --layers 3 --sparse-step 1 --dense-layers 1 --scmoe-shortcut pos1 --scmoe-combine add --dtype F32"
  "scmoe_none_top2|--family scmoe --experts 6 --top-k 2 --layers 4 --shared-ffn 0 --scmoe-shortcut none --scmoe-combine add --dtype F32"
)

ids=$("$py" -c "import numpy as np; r=np.random.default_rng(5); print(','.join(str(x) for x in r.integers(0, 512, 23)))")
failed=0
for c in "${cases[@]}"; do
  name="${c%%|*}"
  flags="${c#*|}"
  dir="$work/$name"
  # shellcheck disable=SC2086
  "$sy" make-tiny --out "$dir" --vocab 512 --seed 11 $flags >/dev/null
  "$sy" score --model "$dir" --ids "$ids" --quiet --dump-logits "$dir/sy.npy" --load-json "$dir/sy_load.json" >/dev/null 2>"$dir/sy.err" \
    || { echo "FAIL [$name] switchyard score failed:"; cat "$dir/sy.err"; failed=1; continue; }
  "$py" "$here/hf_reference.py" --model "$dir" --ids "$ids" --out "$dir/ref.npy" --routing-out "$dir/ref_routing.json"
  dtype=$(grep -o '"torch_dtype": "[a-z0-9]*"' "$dir/config.json" | sed 's/.*"\([a-z0-9]*\)"$/\1/' | sed 's/bfloat16/bf16/;s/float16/f16/;s/float32/f32/')
  "$py" "$here/compare_npy.py" "$dir/sy.npy" "$dir/ref.npy" --dtype "$dtype" --model "$dir" --label "$name" || failed=1
  "$py" "$here/logits_checks.py" loads "$dir/sy_load.json" "$dir/ref_routing.json" "$name" || failed=1
done
exit $failed
