#!/usr/bin/env bash
# Expert parallelism under mpirun: bad setups end with a clear error on every rank, a non-zero
# exit and no hang -- more ranks than experts, a placement file that misses or duplicates an
# expert or lists the wrong number of devices, misused replicas, ranks that load different
# models, and a rank
# that dies while the others wait for it in a collective.
# Usage: test_ep_errors.sh SWITCHYARD_BINARY WORK_DIR
set -uo pipefail
sy="$1"
work="$2"
rm -rf "$work" && mkdir -p "$work"
command -v mpirun >/dev/null || { echo "SKIP: mpirun not found"; exit 77; }
export SWITCHYARD_KEEP_OPENBLAS_CORETYPE=1
# Leak checks off for MPI ranks under AddressSanitizer (Open MPI's components keep memory to exit).
mpi=(env "ASAN_OPTIONS=${ASAN_OPTIONS:-}:detect_leaks=0" mpirun --oversubscribe --allow-run-as-root)
"$sy" make-tiny --family mixtral --out "$work/m3" --experts 3 --layers 2 >/dev/null || exit 1
"$sy" make-tiny --family mixtral --out "$work/m3b" --experts 3 --layers 3 >/dev/null || exit 1
failures=0

EXPECT_TIMEOUT=120
source "$(dirname "$0")/expect_error.sh"

score=(score --ids 1,2,3,4,5,6 -q)
expect "more ranks than experts" "mpirun started 4 ranks but the model has only 3 experts" -- \
  "${mpi[@]}" -np 4 "$sy" "${score[@]}" -m "$work/m3"
printf '0 1\n# expert 2 forgotten\n' >"$work/missing.txt"
expect "placement misses an expert" "does not place expert 2" "missing.txt" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/missing.txt"
printf '0 1\n1 2\n' >"$work/dup.txt"
expect "placement duplicates an expert" "expert 1 is already placed on device 0" "dup.txt:2" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/dup.txt"
printf '0\n1\n2\n' >"$work/three.txt"
expect "placement for another rank count" "lists 3 devices but mpirun started 2 ranks" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/three.txt"
# Replicas ('+e', the EPLB-style baseline): on the expert's own device, a bad id, without
# mpirun, with the policies that count each expert on one device.
printf '0 1\n2 +1\n' >"$work/rep.txt"
printf '0 1 +1\n2\n' >"$work/rep_self.txt"
printf '0 1\n2 +x\n' >"$work/rep_bad.txt"
expect "replica on its owner" "device 0 already holds expert 1 (it owns it)" "rep_self.txt:1" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/rep_self.txt"
expect "replica id not a number" "'+x' is not an expert id" "rep_bad.txt:2" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/rep_bad.txt"
expect "replicas without mpirun" "replicas take effect only under expert parallelism" -- \
  "$sy" "${score[@]}" -m "$work/m3" --placement "$work/rep.txt"
expect "replicas with device capacity" "counts each expert on one device" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/rep.txt" \
  --capacity-policy device --capacity-factor 1
expect "replicas with realb" "replicates experts: compare them in separate runs" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --placement "$work/rep.txt" \
  --precision-policy realb
expect "--devices disagrees with the ranks" "--devices 3 does not match the 2 ranks" -- \
  "${mpi[@]}" -np 2 "$sy" "${score[@]}" -m "$work/m3" --devices 3
expect "ranks disagree on the model" "ranks disagree on the model" -- \
  "${mpi[@]}" -np 1 "$sy" "${score[@]}" -m "$work/m3" : -np 1 "$sy" "${score[@]}" -m "$work/m3b"
# Rank 1's checkpoint is truncated: it fails while loading; rank 0 is already waiting in the
# first collective and must be taken down, not left hanging.
cp -r "$work/m3" "$work/broken"
truncate -s 5000 "$work/broken/model.safetensors"
expect "a rank dies" "rank 1 of 2" "model.safetensors" -- \
  "${mpi[@]}" -np 1 "$sy" "${score[@]}" -m "$work/m3" : -np 1 "$sy" "${score[@]}" -m "$work/broken"

if [ $failures -ne 0 ]; then echo "$failures expert-parallel error checks FAILED"; exit 1; fi
echo "all expert-parallel error checks passed"
