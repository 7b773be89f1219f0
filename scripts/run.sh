#!/usr/bin/env bash
# The main job: set up, build, write a tiny random Mixtral-style checkpoint in the real
# Hugging Face layout, and generate from it, printing the text and the expert-load summary.
# To run a downloaded checkpoint instead:  build/switchyard generate --model /path/to/hf-dir --prompt "..."
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
sy="$root/build/switchyard"
model="${SWITCHYARD_MODEL:-$root/build/tiny-mixtral}"
if [ -z "${SWITCHYARD_MODEL:-}" ]; then
  "$sy" make-tiny --family mixtral --out "$model" --vocab 1024 --hidden 128 --layers 4 \
    --heads 8 --kv-heads 2 --experts 8 --top-k 2 --expert-ffn 256 --dtype BF16
fi
"$sy" inspect --model "$model"
echo
"$sy" generate --model "$model" --prompt "${PROMPT:-In the beginning}" --max-tokens "${MAX_TOKENS:-48}" \
  --temperature 0.8 --top-p 0.95 --seed 1
