#!/usr/bin/env bash
# Self-check of the PyTorch trainer twin (tests/reference/train_reference.py) that Switchyard's
# C++ trainer is compared against:
#   (a) its float64 gradients (grads.safetensors) equal central finite differences of its own loss
#       on ~20 scalars across router, experts, shared expert, attention, norms, embedding, lm_head
#       (relative error < 1e-5), dropless and with a capacity limit;
#   (b) its float32 step-0 logits equal hf_reference.py's forward (compare_npy.py tolerance), so
#       the trained model is the reference model; a huge capacity factor equals dropless exactly;
#   (c) the 10-step AdamW loss trace decreases and follows the documented lr schedule;
#   (d) unit cases: L_aux = 1 at uniform probabilities with a balanced assignment, hand-computed
#       L_aux / L_z and the L_aux gradient, capacity keep rule (score order, ties to the earlier
#       token), AdamW / clipping equal torch.optim.AdamW / clip_grad_norm_.
# Usage: test_train_reference.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = /usr/bin/python3 or torch missing.
set -euo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
twin="$here/train_reference.py"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
failed=0

# ---- (d) unit cases of the loss / capacity / optimizer pieces
"$py" "$here/train_reference_checks.py" units || failed=1

# ---- tiny models and tokens
"$sy" make-tiny --out "$work/mixtral" --family mixtral --dtype F32 --hidden 32 --layers 2 --experts 4 --top-k 2 \
  --heads 4 --kv-heads 2 --expert-ffn 48 --vocab 64 --tokenizer none --tie-embeddings --seed 3 >/dev/null
"$sy" make-tiny --out "$work/qwen2_moe" --family qwen2_moe --dtype F32 --hidden 32 --layers 2 --experts 4 --top-k 2 \
  --heads 4 --kv-heads 2 --expert-ffn 48 --shared-ffn 40 --vocab 64 --tokenizer none --seed 4 >/dev/null
"$sy" make-tiny --out "$work/qwen3_moe" --family qwen3_moe --dtype F32 --hidden 32 --layers 2 --experts 4 --top-k 2 \
  --heads 4 --kv-heads 2 --expert-ffn 48 --vocab 64 --tokenizer none --seed 5 >/dev/null
"$py" -c "import numpy as np; np.save('$work/tokens.npy', np.random.default_rng(7).integers(0, 64, (2, 12)).astype(np.int32))"
ids=$("$py" -c "import numpy as np; t=np.load('$work/tokens.npy'); print(';'.join(','.join(map(str, r)) for r in t))")

# FD_CHECK MODEL_DIR FIXTURE_DIR(float64) CAPACITY NUM LABEL
fd_check() {
  "$py" "$here/train_reference_checks.py" fd "$@"
}

for fam in mixtral qwen2_moe qwen3_moe; do
  dir="$work/$fam"
  for dt in float32 float64; do
    "$py" "$twin" --model "$dir" --tokens "$work/tokens.npy" --out "$work/$fam.$dt" --dtype "$dt" --steps 10 \
      2>"$work/$fam.$dt.log" || { echo "FAIL [$fam] train_reference.py --dtype $dt:"; cat "$work/$fam.$dt.log"; failed=1; continue 2; }
  done
  # (a) float64 gradients vs finite differences
  n=20; [ "$fam" = qwen3_moe ] && n=10
  fd_check "$dir" "$work/$fam.float64" 0 $n "$fam" || failed=1
  # (b) the twin's forward is hf_reference.py's model
  "$py" "$here/hf_reference.py" --model "$dir" --ids "$ids" --out "$work/$fam.hf.npy"
  "$py" "$here/compare_npy.py" "$work/$fam.float32/logits.npy" "$work/$fam.hf.npy" --dtype f32 --model "$dir" \
    --label "$fam twin vs hf_reference" || failed=1
  # (c) the loss trace and float32 vs float64
  "$py" "$here/train_reference_checks.py" trace "$work/$fam.float32" "$work/$fam.float64" "$fam" || failed=1
done

# capacity: a huge factor is exactly dropless; a tight one drops pairs and its gradients still equal FD
"$py" "$twin" --model "$work/mixtral" --tokens "$work/tokens.npy" --out "$work/cap_huge" --steps 0 --capacity-factor 100 2>/dev/null
"$py" "$here/train_reference_checks.py" bitwise "$work/cap_huge/logits.npy" "$work/mixtral.float32/logits.npy" || failed=1
mkdir -p "$work/cap" && cp "$work/tokens.npy" "$work/cap/"
"$py" "$twin" --model "$work/mixtral" --tokens "$work/tokens.npy" --out "$work/cap/float64" --dtype float64 \
  --steps 0 --capacity-factor 1.0 2>/dev/null
"$py" "$here/train_reference_checks.py" capacity "$work/cap/float64/loss.json" || failed=1
fd_check "$work/mixtral" "$work/cap/float64" 1.0 12 "mixtral capacity 1.0" || failed=1

exit $failed
