#!/usr/bin/env bash
# The main job: set up, build, and generate text with the bundled MoE model (models/kjv-moe-9m,
# trained by `switchyard train` on the King James Bible), printing the text and the expert-load
# summary. To run another checkpoint:  SWITCHYARD_MODEL=/path/to/hf-dir scripts/run.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/scripts/build.sh"
sy="$root/build/switchyard"
model="${SWITCHYARD_MODEL:-$root/models/kjv-moe-9m}"
"$sy" inspect --model "$model"
echo
"$sy" generate --model "$model" --prompt "${PROMPT:-And God said}" --max-tokens "${MAX_TOKENS:-64}" \
  --temperature 0.8 --top-p 0.95 --seed 1
