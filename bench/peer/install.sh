#!/usr/bin/env bash
# Installs llama.cpp as a peer from the npm registry: node-llama-cpp 3.22.1 (llama.cpp release
# v0.5.0 of its build) with its prebuilt Linux x64 CPU backends (AVX2 ... Zen 4, picked at run
# time) into bench/peer/node_modules (git-ignored). Needs Node.js >= 20. No compiler, no GPU
# packages (--omit=optional drops the CUDA / Vulkan builds).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
command -v node >/dev/null 2>&1 || { echo "install.sh: node not found" >&2; exit 1; }
major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt 20 ]; then
  echo "install.sh: node-llama-cpp needs Node.js >= 20; this machine has $(node --version)" >&2
  exit 1
fi
if [ -f "$here/node_modules/@node-llama-cpp/linux-x64/package.json" ]; then exit 0; fi
cd "$here"
npm install --no-audit --no-fund --ignore-scripts --omit=optional >&2
