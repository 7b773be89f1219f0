#!/usr/bin/env bash
# Installs every Debian package Switchyard's build, tests and test references need.
# Idempotent; needs root (or sudo). Node comes from Debian unless one is already on PATH.
set -euo pipefail
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

packages=(
  cmake g++ make ninja-build pkg-config git clang-format
  libopenblas-dev libhwy-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libfmt-dev libicu-dev
  libgtest-dev libbenchmark-dev libopenmpi-dev openmpi-bin
  python3 python3-torch python3-numpy bible-kjv-text
  clang libclang-rt-14-dev libomp-dev  # libFuzzer + sanitizers for scripts/fuzz.sh
)
command -v node >/dev/null 2>&1 || packages+=(nodejs)
command -v npm >/dev/null 2>&1 || packages+=(npm)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# Hugging Face's own JavaScript tokenizers: the independent reference for tokenizer tests.
here="$(cd "$(dirname "$0")/.." && pwd)"
if [ ! -d "$here/tests/tokenizer/node_modules/@huggingface/tokenizers" ]; then
  (cd "$here/tests/tokenizer" && npm install --no-audit --no-fund --silent >/dev/null)
fi
# Hugging Face's own JavaScript GGUF parser: the independent reference for GGUF tests.
if [ ! -d "$here/tests/gguf/node_modules/@huggingface/gguf" ]; then
  (cd "$here/tests/gguf" && npm install --no-audit --no-fund --silent >/dev/null)
fi
