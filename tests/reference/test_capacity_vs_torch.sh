#!/usr/bin/env bash
# Switchyard's capacity policies (src/moe/capacity.h: score / order / reverse / random token drop,
# expanded drop, reroute, device-level capacity, and none) against the independent PyTorch
# reference tests/reference/capacity_reference.py, on ~2200 cases: random softmax and sigmoid
# score matrices (T 1..300, E in {1,3,4,8,12,60}, k in {1,2,3,E}, gamma 0.5..8) and adversarial
# ones (exact ties, all tokens to one expert, empty experts, k = 1, k = E, gamma so large that
# nothing overflows -- the table must come back bit for bit --, single tokens, tables that already
# hold dropped pairs, renormalisation, placements with uneven device sizes from every source
# device, capacity rounding at integer boundaries). Ids must be equal, weights equal to 1e-6
# relative, outcome counts equal; random drop is checked by its invariants and seeding.
# A failure prints the case and the first differing (token, slot).
# Usage: test_capacity_vs_torch.sh SWITCHYARD_BINARY WORK_DIR   (sy_capacity from $SY_CAPACITY
# or next to WORK_DIR). Exit: 0 all agree, 1 a mismatch or error, 77 python3/torch missing.
set -euo pipefail
work="${2:-$(mktemp -d)}"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
tool="${SY_CAPACITY:-$(dirname "$work")/sy_capacity}"

if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
[ -x "$tool" ] || { echo "FAIL: sy_capacity not found at $tool (build target sy_capacity)" >&2; exit 1; }
rm -rf "$work" && mkdir -p "$work"

"$py" "$here/capacity_reference.py" generate "$work"
"$py" "$here/capacity_reference.py" selftest "$work" --limit 2000 \
  || { echo "FAIL: the reference disagrees with its own scalar formulation" >&2; exit 1; }
"$tool" "$work" || { echo "FAIL: sy_capacity failed" >&2; exit 1; }
"$py" "$here/capacity_reference.py" check "$work"
