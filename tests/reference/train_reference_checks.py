#!/usr/bin/python3
"""Checks for test_train_reference.sh (self-check of the PyTorch trainer twin train_reference.py).

Subcommands:
  units
      (d) unit cases of the twin's pieces: L_aux = 1 and L_z = ln(E)^2 at uniform probabilities
      with a balanced assignment; hand-computed L_aux / L_z and the L_aux gradient; the capacity
      C and keep rule (highest score, ties to the earlier token; factor 0 keeps all); the lr
      schedule; AdamW + clipping == torch.optim.AdamW + clip_grad_norm_.
  fd MODEL_DIR FIXTURE_DIR CAPACITY NUM LABEL
      (a) the float64 fixture's grads.safetensors has the checkpoint's names and shapes (F32);
      the loss re-evaluated equals loss.json's total; central finite differences of the loss on
      NUM scalars spread over router / expert / shared / attention / norm / embedding / lm_head
      equal the stored gradients (relative error < 1e-5). Tokens: FIXTURE_DIR/../tokens.npy.
  trace F32_DIR F64_DIR LABEL
      (c) float32 vs float64 gradients at step 0 (||dgrad||/||grad|| < 1e-4), and the float32
      loss trace decreases (final < half the first, last step's loss below the first).
  bitwise A.npy B.npy
      a huge capacity factor's logits equal the dropless logits bitwise.
  capacity LOSS.json
      a tight capacity factor drops pairs, keeps at most C per expert, and kept + dropped equals
      the routed pairs in every layer.
Each prints PASS / FAIL / INFO lines and exits 0 when all its checks pass, else 1.
"""
import argparse
import json
import math
import sys


def units():
    import torch
    import train_reference as tr
    torch.set_num_threads(1)
    ok = True

    def check(name, cond, detail=""):
        nonlocal ok
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
    return 0 if ok else 1


def fd_check(model_dir, fix, cap, num, label):
    import numpy as np
    import torch
    import safetensors_np
    import train_reference as tr
    cap, num = float(cap), int(num)
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
    return 0 if ok else 1


def trace_check(f32, f64, label):
    import numpy as np
    import safetensors_np
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
    return 0 if ok else 1


def bitwise(a_path, b_path):
    import numpy as np
    a, b = np.load(a_path), np.load(b_path)
    ok = np.array_equal(a, b)
    print(f"{'PASS' if ok else 'FAIL'} [capacity] factor 100 logits == dropless logits (bitwise)")
    return 0 if ok else 1


def capacity(loss_path):
    l = json.load(open(loss_path))
    drops = [p["dropped_pairs"] for p in l["per_layer"]]
    ok = sum(drops) > 0 and all(max(p["kept_counts"]) <= p["capacity"] for p in l["per_layer"]) \
        and all(sum(p["kept_counts"]) + p["dropped_pairs"] == sum(p["expert_counts"]) for p in l["per_layer"])
    print(f"{'PASS' if ok else 'FAIL'} [capacity] factor 1.0: capacity {[p['capacity'] for p in l['per_layer']]}, "
          f"loads {[p['expert_counts'] for p in l['per_layer']]} -> kept {[p['kept_counts'] for p in l['per_layer']]}, dropped {drops}")
    return 0 if ok else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("units", help="unit cases of the loss / capacity / optimizer pieces")
    p = sub.add_parser("fd", help="float64 gradients vs central finite differences")
    for arg in ("model_dir", "fixture_dir", "capacity", "num", "label"):
        p.add_argument(arg)
    p = sub.add_parser("trace", help="float32 vs float64 and the loss trace")
    for arg in ("f32_dir", "f64_dir", "label"):
        p.add_argument(arg)
    p = sub.add_parser("bitwise", help="huge capacity factor logits == dropless logits")
    p.add_argument("a")
    p.add_argument("b")
    p = sub.add_parser("capacity", help="a tight capacity factor drops pairs consistently")
    p.add_argument("loss_json")
    a = ap.parse_args(argv)
    if a.cmd == "units":
        return units()
    if a.cmd == "fd":
        return fd_check(a.model_dir, a.fixture_dir, a.capacity, a.num, a.label)
    if a.cmd == "trace":
        return trace_check(a.f32_dir, a.f64_dir, a.label)
    if a.cmd == "bitwise":
        return bitwise(a.a, a.b)
    if a.cmd == "capacity":
        return capacity(a.loss_json)
    return 2


if __name__ == "__main__":
    sys.exit(main())
