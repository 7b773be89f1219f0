# Shared by bench/scmoe_speed.sh and bench/scmoe_train_speed.sh (sourced, after $root is set):
# the switchyard binary, the work folder, mpirun, and the ScMoE variants both compare.
sy="$root/build/switchyard"
[ -x "$sy" ] || { echo "build first: scripts/build.sh" >&2; exit 1; }
work="${SCMOE_WORK:-$(mktemp -d)}"
mkdir -p "$work"
py=/usr/bin/python3
mpi=(mpirun --oversubscribe --allow-run-as-root --bind-to none)

# name|flags: top-2, top-1 and shared-expert MoE baselines, ScMoE at the three positions (CG-1).
scmoe_variants=(
  "top2|--scmoe-shortcut none --scmoe-combine add --shared-ffn 0 --top-k 2"
  "top1|--scmoe-shortcut none --scmoe-combine add --shared-ffn 0 --top-k 1"
  "shared|--scmoe-shortcut none --scmoe-combine add --top-k 1"
  "pos1|--scmoe-shortcut pos1 --scmoe-combine cg1"
  "pos2|--scmoe-shortcut pos2 --scmoe-combine cg1"
  "pos3|--scmoe-shortcut pos3 --scmoe-combine cg1"
)
scmoe_flags() {  # NAME -> its flags on stdout
  local v
  for v in "${scmoe_variants[@]}"; do [[ "$v" == "$1|"* ]] && echo "${v#*|}"; done
}
