#!/usr/bin/env bash
# The PyTorch reference's ScMoE (hf_reference.py, train_reference.py) checked on its own, with no
# Switchyard code involved: against a numpy forward written from docs/scmoe.md, against the same
# weights saved as Qwen2-MoE, gate identities, KV cache, finite differences of the twin's
# gradients, and its refusals (scmoe_reference_checks.py). It is the reference
# test_logits_vs_torch and test_train_vs_torch hold Switchyard's ScMoE to.
# Usage: test_scmoe_reference.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = torch missing.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
exec "$py" "$here/scmoe_reference_checks.py"
