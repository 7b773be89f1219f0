#!/usr/bin/env bash
# Capacity-Aware Inference's quality study (papers.md section 1, Tables 1 and 2) reproduced in
# kind on a model trained here: perplexity on held-out KJV text (the validation split the model
# never saw) under each capacity policy x gamma x devices, with DT and the modelled EP speedup.
#
#   bench/capacity_quality.sh [--model DIR] [--chars N] [--out FILE.md] [--threads T]
#
# Defaults: models/kjv-moe-9m, the first 60000 characters of the validation split, windows of
# 256 tokens in batches of 8 (one forward = 2048 tokens, the regime the paper's capacity is
# computed in), bench/results/capacity_quality.md. Devices are emulated in one process
# (--devices N: experts placed contiguously, each forward's tokens split into N slices, the
# capacity applied per slice); the speedup column is a model (sum over calls of the busiest
# device's pairs), not a measurement.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
model="$root/models/kjv-moe-9m"
chars=60000
out="$root/bench/results/capacity_quality.md"
threads=1
while [ $# -gt 0 ]; do
  case "$1" in
    --model) model="$2"; shift 2 ;;
    --chars) chars="$2"; shift 2 ;;
    --out) out="$2"; shift 2 ;;
    --threads) threads="$2"; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "capacity_quality.sh: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
done
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

"$sy" train --out "$work/split" --export-corpus "$work/split" >/dev/null
head -c "$chars" "$work/split/validation.txt" >"$work/text.txt"
experts=$(grep -o '"num_local_experts": *[0-9]*\|"num_experts": *[0-9]*' "$model/config.json" | grep -o '[0-9]*$' | head -1)
policies=none,score,random,order,reverse,expanded
gammas=1,1.25,1.5,2
{
  echo "# Capacity-Aware Inference on a model trained here: quality by policy, gamma and devices"
  echo
  echo "Made by \`bench/capacity_quality.sh\` ($(date -u +%F)) on this machine's CPU: model"
  echo "\`$(basename "$model")\` ($experts experts), the first $chars characters of the held-out KJV"
  echo "validation split, windows of 256 tokens, 8 windows per forward call (2048 tokens, the"
  echo "capacity's T); random drop seed 0. Devices are **emulated** in one process: experts placed"
  echo "contiguously, each call's tokens cut into one slice per device and the capacity applied per"
  echo "slice, as the paper applies it per local device before the all-to-all. \`model x\` is the"
  echo "modelled EP speedup over dropless (sum over calls of the busiest device's pairs, or the"
  echo "busiest expert's with one device), not a measured time."
  echo
} >"$out"
summary="$work/summary.tsv"
: >"$summary"
for devices in 1 4 8; do
  [ "$devices" -le "$experts" ] || continue
  dev_args=()
  [ "$devices" -gt 1 ] && dev_args=(--devices "$devices")
  echo "devices $devices ..." >&2
  "$sy" score -m "$model" -f "$work/text.txt" --threads "$threads" --window 256 --batch 8 \
    --sweep "$policies" --sweep-factors "$gammas" "${dev_args[@]}" >"$work/sweep.txt" 2>"$work/err.txt" \
    || { cat "$work/err.txt" >&2; exit 1; }
  {
    echo "## $devices device(s)"
    echo
    echo '```'
    grep -v '^capacity policy\|^warning' "$work/sweep.txt"
    echo '```'
    echo
  } >>"$out"
  awk -v d="$devices" 'NR > 1 && $1 != "DT" && NF >= 11 { print d "\t" $1 "\t" $2 "\t" $3 "\t" $4 "\t" $5 "\t" $11 }' \
    "$work/sweep.txt" >>"$summary"
done
{
  echo "## Perplexity change against dropless (token drop by Score / Random / Order / Reverse, Expanded drop)"
  echo
  echo "| devices | gamma | DT | score | random | order | reverse | expanded | model x (score) | model x (expanded) |"
  echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
  awk -F'\t' '
    $2 == "none" { next }
    { key = $1 "\t" $3; v[key, $2] = $5; x[key, $2] = $7; if (!(key in seen)) { seen[key] = 1; order[n++] = key }
      if ($2 == "score") dt[key] = $6 }
    END { for (i = 0; i < n; i++) { split(order[i], k, "\t");
            printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", k[1], k[2], dt[order[i]],
              v[order[i], "score"], v[order[i], "random"], v[order[i], "order"], v[order[i], "reverse"],
              v[order[i], "expanded"], x[order[i], "score"], x[order[i], "expanded"] } }' "$summary"
  echo
  echo "Dropless perplexity: $(awk -F'\t' '$2 == "none" { printf "%s (%s device(s)) ", $4, $1 }' "$summary")"
} >>"$out"
echo "wrote $out" >&2
