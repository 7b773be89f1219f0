#!/usr/bin/env bash
# Self-check of the PyTorch trainer twin (tests/reference/train_reference.py) that Switchyard's
# C++ trainer is compared against:
#   (a) its float64 gradients (grads.safetensors) equal central finite differences of its own loss
#       on ~20 scalars across router, experts, shared expert, attention, norms, embedding, lm_head
#       (relative error < 1e-5), dropless and with a capacity limit;
#   (b) its float32 step-0 logits equal hf_reference.py's forward (compare_npy.py tolerance), so
#       the trained model is the reference model; a huge capacity factor equals dropless exactly;
#   (c) the 10-step AdamW loss trace decreases and follows the documented lr schedule;
#   (d) unit cases: L_aux = 1 at uniform probabilities with a balanced assignment, hand-computed
#       L_aux / L_z and the L_aux gradient, capacity keep rule (score order, ties to the earlier
#       token), AdamW / clipping equal torch.optim.AdamW / clip_grad_norm_.
# Usage: test_train_reference.sh SWITCHYARD_BINARY WORK_DIR. Exit 77 = /usr/bin/python3 or torch missing.
set -euo pipefail
sy="$1"
work="$2"
here="$(cd "$(dirname "$0")" && pwd)"
py=/usr/bin/python3
if [ ! -x "$py" ] || ! "$py" -c "import torch, numpy" 2>/dev/null; then
  echo "SKIP: $py cannot import torch and numpy (install python3-torch python3-numpy)" >&2
  exit 77
fi
rm -rf "$work" && mkdir -p "$work"
twin="$here/train_reference.py"
export PYTHONPATH="$here${PYTHONPATH:+:$PYTHONPATH}"
failed=0

# ---- (d) unit cases of the loss / capacity / optimizer pieces
"$py" - <<'PY' || failed=1
import math
import torch
import train_reference as tr
torch.set_num_threads(1)
ok = True
def check(name, cond, detail=""):
    global ok
    print(f"{'PASS' if cond else 'FAIL'} [unit] {name} {detail}")
    ok &= bool(cond)
dt = torch.float64
# L_aux = 1 exactly at uniform probabilities and a balanced assignment (T=8, E=4, k=2)
logits = torch.zeros(8, 4, dtype=dt)
ids = torch.tensor([[0, 1], [2, 3]] * 4)
aux, z, counts = tr.router_losses(logits, ids, 4)
check("aux uniform+balanced == 1", abs(float(aux) - 1.0) < 1e-15, f"aux={float(aux)!r} counts={counts.tolist()}")
check("z uniform == ln(4)^2", abs(float(z) - math.log(4) ** 2) < 1e-15, f"z={float(z)!r}")
# hand case: T=2, E=2, k=1, logits [[0, 0], [ln 3, 0]], both tokens on expert 0
logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]], dtype=dt, requires_grad=True)
ids = torch.tensor([[0], [0]])
aux, z, counts = tr.router_losses(logits, ids, 2)
# D = [1, 0]; P_0 = (1/2 + 3/4)/2 = 5/8; aux = 2 * 5/8 = 1.25; z = ((ln 2)^2 + (ln 4)^2) / 2 = 2.5 (ln 2)^2
check("aux hand case == 1.25", abs(float(aux) - 1.25) < 1e-15, f"aux={float(aux)!r}")
check("z hand case == 2.5 ln(2)^2", abs(float(z) - 2.5 * math.log(2) ** 2) < 1e-15, f"z={float(z)!r}")
aux.backward()
p = torch.softmax(logits.detach(), -1)
D = torch.tensor([1.0, 0.0], dtype=dt)
expect = (2 / 2) * p * (D[None, :] - (p * D).sum(-1, keepdim=True))  # (E/T) p_tj (D_j - sum_i D_i p_ti)
check("aux gradient (D constant)", torch.allclose(logits.grad, expect, atol=1e-15), f"{logits.grad.tolist()}")
# capacity: T=5, k=1, E=2, g=0.8 -> C = ceil(0.8*5*1/2) = 2; expert 0 has tokens 0,1,2,4 with p 0.6,0.9,0.6,0.6
probs = torch.tensor([[0.6, 0.4], [0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.6, 0.4]], dtype=dt)
ids = torch.tensor([[0], [0], [0], [1], [0]])
keep = tr.capacity_keep(ids, probs, 0.8)
check("capacity C", tr.capacity_of(0.8, 5, 1, 2) == 2)
check("capacity keeps highest p, ties to earlier token", keep.reshape(-1).tolist() == [True, True, False, True, False],
      f"keep={keep.reshape(-1).tolist()}")
check("capacity 0 keeps all", bool(tr.capacity_keep(ids, probs, 0.0).all()))
# lr schedule (steps 10, warmup 3, lr 3e-3, min ratio 0.1)
lrs = [tr.lr_at(s, 10, 3e-3, 3, 0.1) for s in range(1, 11)]
close = lambda a, b: abs(a - b) <= 1e-12 * abs(b)
check("lr schedule", close(lrs[0], 1e-3) and close(lrs[2], 3e-3) and close(lrs[-1], 3e-4)
      and close(lrs[5], 3e-4 + 0.5 * 2.7e-3 * (1 + math.cos(math.pi * 3 / 7)))
      and all(a > b for a, b in zip(lrs[2:], lrs[3:])), f"{[f'{x:.3e}' for x in lrs]}")
# AdamW and clipping == torch.optim.AdamW (decay group ndim >= 2, no-decay group 1-D) + clip_grad_norm_
g = torch.Generator().manual_seed(0)
init = [torch.randn(5, 3, generator=g, dtype=dt), torch.randn(7, generator=g, dtype=dt)]
mine = [t.clone().requires_grad_() for t in init]
theirs = [t.clone().requires_grad_() for t in init]
opt = tr.AdamW(mine, 0.9, 0.95, 1e-8, 0.1)
topt = torch.optim.AdamW([{"params": [theirs[0]], "weight_decay": 0.1}, {"params": [theirs[1]], "weight_decay": 0.0}],
                         lr=1.0, betas=(0.9, 0.95), eps=1e-8)
worst = 0.0
for step, lr in enumerate([1e-3, 3e-3, 2e-3], start=1):
    grads = [torch.randn(t.shape, generator=g, dtype=dt) * 3 for t in init]
    for a, b, gr in zip(mine, theirs, grads):
        a.grad, b.grad = gr.clone(), gr.clone()
    n1, _ = tr.clip_grads(mine, 1.0)
    n2 = float(torch.nn.utils.clip_grad_norm_(theirs, 1.0))
    worst = max(worst, abs(n1 - n2))
    opt.step(lr)
    for grp in topt.param_groups:
        grp["lr"] = lr
    topt.step()
    worst = max(worst, max(float((a - b).abs().max()) for a, b in zip(mine, theirs)))
check("AdamW + clipping == torch.optim.AdamW + clip_grad_norm_", worst < 1e-14, f"max diff {worst:.2e}")
raise SystemExit(0 if ok else 1)
PY

# ---- tiny models and tokens
"$sy" make-tiny --out "$work/mixtral" --family mixtral --dtype F32 --hidden 32 --layers 2 --experts 4 --top-k 2 \
  --heads 4 --kv-heads 2 --expert-ffn 48 --vocab 64 --tokenizer none --tie-embeddings --seed 3 >/dev/null
"$sy" make-tiny --out "$work/qwen2_moe" --family qwen2_moe --dtype F32 --hidden 32 --layers 2 --experts 4 --top-k 2 \
  --heads 4 --kv-heads 2 --expert-ffn 48 --shared-ffn 40 --vocab 64 --tokenizer none --seed 4 >/dev/null
"$sy" make-tiny --out "$work/qwen3_moe" --family qwen3_moe --dtype F32 --hidden 32 --layers 2 --experts 4 --top-k 2 \
  --heads 4 --kv-heads 2 --expert-ffn 48 --vocab 64 --tokenizer none --seed 5 >/dev/null
"$py" -c "import numpy as np; np.save('$work/tokens.npy', np.random.default_rng(7).integers(0, 64, (2, 12)).astype(np.int32))"
ids=$("$py" -c "import numpy as np; t=np.load('$work/tokens.npy'); print(';'.join(','.join(map(str, r)) for r in t))")

# FD_CHECK MODEL_DIR FIXTURE_DIR(float64) CAPACITY NUM LABEL
fd_check() {
  "$py" - "$@" <<'PY'
import json, sys
import numpy as np
import torch
import safetensors_np, train_reference as tr
model_dir, fix, cap, num, label = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(1)
loss_json = json.load(open(f"{fix}/loss.json"))
model = tr.TrainModel(model_dir, torch.float64, cap)
tokens = tr.load_tokens(f"{fix}/../tokens.npy", model.embed.shape[0])
grads = safetensors_np.read_file(f"{fix}/grads.safetensors")
ckpt = safetensors_np.read_checkpoint(model_dir)
ok = sorted(grads) == sorted(ckpt) and all(grads[n].shape == ckpt[n].shape and grads[n].dtype == np.float32 for n in ckpt)
print(f"{'PASS' if ok else 'FAIL'} [{label}] grads.safetensors has the checkpoint's {len(ckpt)} names and shapes (F32)")
def loss():
    with torch.no_grad():
        return float(tr.compute_loss(model, tokens, loss_json["aux_coef"], loss_json["z_coef"])[0]["total"])
l0 = loss()
same = abs(l0 - loss_json["total"]) <= 1e-12 * abs(l0)
print(f"{'PASS' if same else 'FAIL'} [{label}] loss re-evaluated {l0!r} == loss.json total {loss_json['total']!r}")
ok &= same
cats = {"router": lambda n: n.endswith(("mlp.gate.weight", "block_sparse_moe.gate.weight")),
        "expert": lambda n: ".experts." in n, "shared": lambda n: "shared_expert" in n,
        "attention": lambda n: ".self_attn." in n and "_proj." in n, "norm": lambda n: "norm.weight" in n,
        "embedding": lambda n: "embed_tokens" in n, "lm_head": lambda n: n == "lm_head.weight"}
names = {c: [n for n in sorted(model.params) if f(n) and model.params[n].requires_grad] for c, f in cats.items()}
names = {c: v for c, v in names.items() if v}
rng = np.random.default_rng(11)
h, worst, picks = 1e-5, (0.0, ""), []
for i in range(num):
    cat = sorted(names)[i % len(names)]
    name = names[cat][rng.integers(len(names[cat]))]
    g = grads[name].astype(np.float64).reshape(-1)
    cand = np.flatnonzero(np.abs(g) >= 0.05 * np.abs(g).max())  # skip near-zero entries (relative error)
    idx = int(cand[rng.integers(len(cand))])
    flat = model.params[name].data.view(-1)
    orig = float(flat[idx])
    flat[idx] = orig + h; lp = loss()
    flat[idx] = orig - h; lm = loss()
    flat[idx] = orig
    fd = (lp - lm) / (2 * h)
    rel = abs(fd - g[idx]) / max(abs(fd), abs(g[idx]))
    picks.append(cat)
    if rel > worst[0]:
        worst = (rel, f"{name}[{idx}] fd={fd:.10g} autograd={g[idx]:.10g}")
    if rel >= 1e-5:
        print(f"FAIL [{label}] {cat} {name}[{idx}]: fd {fd:.10g} autograd {g[idx]:.10g} rel {rel:.2e}")
        ok = False
print(f"{'PASS' if ok else 'FAIL'} [{label}] finite differences on {num} scalars "
      f"({', '.join(f'{c} {picks.count(c)}' for c in sorted(set(picks)))}): worst rel err {worst[0]:.2e} at {worst[1]}")
sys.exit(0 if ok else 1)
PY
}

for fam in mixtral qwen2_moe qwen3_moe; do
  dir="$work/$fam"
  for dt in float32 float64; do
    "$py" "$twin" --model "$dir" --tokens "$work/tokens.npy" --out "$work/$fam.$dt" --dtype "$dt" --steps 10 \
      2>"$work/$fam.$dt.log" || { echo "FAIL [$fam] train_reference.py --dtype $dt:"; cat "$work/$fam.$dt.log"; failed=1; continue 2; }
  done
  # (a) float64 gradients vs finite differences
  n=20; [ "$fam" = qwen3_moe ] && n=10
  fd_check "$dir" "$work/$fam.float64" 0 $n "$fam" || failed=1
  # (b) the twin's forward is hf_reference.py's model
  "$py" "$here/hf_reference.py" --model "$dir" --ids "$ids" --out "$work/$fam.hf.npy"
  "$py" "$here/compare_npy.py" "$work/$fam.float32/logits.npy" "$work/$fam.hf.npy" --dtype f32 --model "$dir" \
    --label "$fam twin vs hf_reference" || failed=1
  # (c) the loss trace and float32 vs float64
  "$py" - "$work/$fam.float32" "$work/$fam.float64" "$fam" <<'PY' || failed=1
import json, math, sys
import numpy as np
import safetensors_np
f32, f64, label = sys.argv[1:4]
ok = True
t32, t64 = json.load(open(f"{f32}/trace.json")), json.load(open(f"{f64}/trace.json"))
g32, g64 = safetensors_np.read_file(f"{f32}/grads.safetensors"), safetensors_np.read_file(f"{f64}/grads.safetensors")
num = math.sqrt(sum(float(((g32[n].astype(np.float64) - g64[n]) ** 2).sum()) for n in g64))
den = math.sqrt(sum(float((g64[n].astype(np.float64) ** 2).sum()) for n in g64))
l32, l64 = json.load(open(f"{f32}/loss.json")), json.load(open(f"{f64}/loss.json"))
print(f"INFO [{label}] float32 vs float64 at step 0: |dloss|/loss {abs(l32['total'] - l64['total']) / l64['total']:.2e}, "
      f"||dgrad||/||grad|| {num / den:.2e}")
ok &= num / den < 1e-4
steps = t32["steps"]
if steps:
    tot = [s["loss_before_update"]["total"] for s in steps] + [t32["final_loss"]["total"]]
    dec = tot[-1] < 0.5 * tot[0] and steps[-1]["loss_before_update"]["total"] < tot[0]
    print(f"{'PASS' if dec else 'FAIL'} [{label}] {len(steps)}-step loss trace decreases: "
          + " ".join(f"{x:.4f}" for x in tot))
    ok &= dec
    last64 = t64["final_loss"]["total"]
    print(f"INFO [{label}] final loss float32 {tot[-1]:.9g} float64 {last64:.9g} (rel {abs(tot[-1] - last64) / last64:.2e})")
    w = [s["grad_norm_before_clip"] for s in steps]
    print(f"INFO [{label}] grad norms before clip: " + " ".join(f"{x:.3f}" for x in w))
sys.exit(0 if ok else 1)
PY
done

# capacity: a huge factor is exactly dropless; a tight one drops pairs and its gradients still equal FD
"$py" "$twin" --model "$work/mixtral" --tokens "$work/tokens.npy" --out "$work/cap_huge" --steps 0 --capacity-factor 100 2>/dev/null
"$py" - "$work/cap_huge/logits.npy" "$work/mixtral.float32/logits.npy" <<'PY' || failed=1
import sys, numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
ok = np.array_equal(a, b)
print(f"{'PASS' if ok else 'FAIL'} [capacity] factor 100 logits == dropless logits (bitwise)")
sys.exit(0 if ok else 1)
PY
mkdir -p "$work/cap" && cp "$work/tokens.npy" "$work/cap/"
"$py" "$twin" --model "$work/mixtral" --tokens "$work/tokens.npy" --out "$work/cap/float64" --dtype float64 \
  --steps 0 --capacity-factor 1.0 2>/dev/null
"$py" - "$work/cap/float64/loss.json" <<'PY' || failed=1
import json, sys
l = json.load(open(sys.argv[1]))
drops = [p["dropped_pairs"] for p in l["per_layer"]]
ok = sum(drops) > 0 and all(max(p["kept_counts"]) <= p["capacity"] for p in l["per_layer"]) \
     and all(sum(p["kept_counts"]) + p["dropped_pairs"] == sum(p["expert_counts"]) for p in l["per_layer"])
print(f"{'PASS' if ok else 'FAIL'} [capacity] factor 1.0: capacity {[p['capacity'] for p in l['per_layer']]}, "
      f"loads {[p['expert_counts'] for p in l['per_layer']]} -> kept {[p['kept_counts'] for p in l['per_layer']]}, dropped {drops}")
sys.exit(0 if ok else 1)
PY
fd_check "$work/mixtral" "$work/cap/float64" 1.0 12 "mixtral capacity 1.0" || failed=1

exit $failed
