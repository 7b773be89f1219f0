#!/usr/bin/env bash
# Switchyard's trainer against its PyTorch twin (train_reference.py, autograd): for tiny
# checkpoints of every supported family, the step-0 logits, loss parts (CE, L_aux, L_z),
# per-layer expert counts, the gradient of every parameter, the 10-step AdamW loss trace
# (warm-up + cosine, clipping) and the final weights agree within float32 tolerances
# (compare_train.py). The twin runs in float64, so the tolerance measures Switchyard's
# float32 error alone. Cases include capacity drop, tied embeddings, GQA, shared experts,
# q/k norms, sigmoid + group-limited routing, dense leading layers, and ScMoE (shortcut
# positions 1-3, CG-1 / CG-2 / add, gradients flowing back through the shortcut).
# Usage: test_train_vs_torch.sh SWITCHYARD_BINARY WORK_DIR (sy_train_twin via SY_TRAIN_TWIN).
# Exit 77 = /usr/bin/python3 or torch missing.
set -euo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
twin_cpp="${SY_TRAIN_TWIN:?set SY_TRAIN_TWIN to the sy_train_twin binary}"
if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
# OpenMP threads that spin while OpenBLAS works starve it on small machines (switchyard train
# sets this itself by re-executing; the twin driver does not).
export OMP_WAIT_POLICY=passive
failed=0

# name | make-tiny flags | twin flags (both sides)
cases=(
  "mixtral|--family mixtral --hidden 32 --heads 4 --kv-heads 2 --experts 4 --expert-ffn 24|"
  "mixtral_capacity|--family mixtral --hidden 32 --heads 4 --kv-heads 4 --experts 4 --expert-ffn 24 --top-k 2|--capacity-factor 1.0"
  "mixtral_tied_k1|--family mixtral --hidden 32 --heads 2 --kv-heads 1 --experts 4 --expert-ffn 16 --top-k 1 --tie-embeddings|--aux-coef 0.1 --z-coef 0.01"
  "qwen2_moe_shared|--family qwen2_moe --hidden 32 --heads 4 --kv-heads 2 --experts 6 --expert-ffn 16 --shared-ffn 32|--capacity-factor 1.25"
  "qwen3_moe_qknorm|--family qwen3_moe --hidden 32 --heads 4 --kv-heads 2 --head-dim 16 --experts 4 --expert-ffn 24 --norm-topk 1|"
  "olmoe_fullnorm|--family olmoe --hidden 32 --heads 4 --kv-heads 4 --experts 4 --expert-ffn 24|"
  "olmoe_clip_qkv|--family olmoe --hidden 32 --heads 4 --kv-heads 4 --experts 4 --expert-ffn 24 --clip-qkv 0.5|"
  "dots1_sigmoid_capacity|--family dots1 --hidden 32 --heads 4 --kv-heads 2 --layers 2 --experts 8 --top-k 2 --expert-ffn 16 --shared-ffn 16|--capacity-factor 1.0"
  "dots1_sigmoid_groups|--family dots1 --hidden 32 --heads 4 --kv-heads 2 --layers 3 --dense-layers 1 --experts 8 --top-k 2 --groups 4 --topk-groups 2 --expert-ffn 16 --shared-ffn 16 --routed-scale 2.5|"
  "scmoe_pos2_cg1|--family scmoe --hidden 32 --heads 4 --kv-heads 2 --layers 4 --experts 4 --expert-ffn 16 --dense-ffn 24 --scmoe-shortcut pos2 --scmoe-combine cg1|"
  "scmoe_pos3_cg2_capacity|--family scmoe --hidden 32 --heads 4 --kv-heads 2 --layers 4 --experts 4 --top-k 2 --expert-ffn 16 --dense-ffn 24 --scmoe-shortcut pos3 --scmoe-combine cg2|--capacity-factor 1.25"
  "scmoe_pos1_every_add|--family scmoe --hidden 32 --heads 4 --kv-heads 2 --layers 3 --sparse-step 1 --dense-layers 1 --experts 4 --expert-ffn 16 --dense-ffn 24 --scmoe-shortcut pos1 --scmoe-combine add|"
)
i=0
for c in "${cases[@]}"; do
  IFS='|' read -r name mk flags <<<"$c"
  d="$work/$name"
  mkdir -p "$d"
  # shellcheck disable=SC2086
  "$sy" make-tiny -o "$d/model" $mk --vocab 96 --dtype F32 --tokenizer none --seed $((i + 3)) >/dev/null
  "$py" -c "import numpy as np; np.save('$d/tokens.npy', np.random.RandomState($i).randint(0, 96, size=(3, 11)).astype(np.int64))"
  # shellcheck disable=SC2086
  "$py" "$here/train_reference.py" --model "$d/model" --tokens "$d/tokens.npy" --out "$d/ref" \
    --dtype float64 --steps 10 $flags >"$d/ref.log" 2>&1 || { echo "FAIL [$name] twin: $(tail -3 "$d/ref.log")"; failed=1; continue; }
  # shellcheck disable=SC2086
  "$twin_cpp" --model "$d/model" --tokens "$d/tokens.npy" --out "$d/sy" --steps 10 $flags \
    || { echo "FAIL [$name] sy_train_twin"; failed=1; continue; }
  "$py" "$here/compare_train.py" "$d/ref" "$d/sy" --label "$name" || failed=1
  i=$((i + 1))
done
exit $failed
