#!/usr/bin/env bash
# Switchyard's router (every score function, selection bias, groups, noisy top-k gating,
# expert choice) against an independent float64 PyTorch reference
# (tests/reference/router_reference.py), through the sy_route driver (SY_ROUTE, set by
# tests/CMakeLists.txt; else looked up next to the switchyard binary).
# Usage: test_router_vs_torch.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = reference missing.
set -euo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
route="${SY_ROUTE:-$(dirname "$sy")/tests/sy_route}"
if [ ! -x "$route" ]; then
  echo "FAIL: sy_route driver not found at '$route' (build the sy_route target or set SY_ROUTE)" >&2
  exit 1
fi
rm -rf "$work" && mkdir -p "$work"
"$py" "$here/router_reference.py" "$route" "$work"
