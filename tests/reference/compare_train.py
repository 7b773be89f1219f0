#!/usr/bin/python3
"""Compares Switchyard's trainer outputs (sy_train_twin) with train_reference.py's fixture.

Usage: compare_train.py REF_DIR SY_DIR [--tol 2e-4] [--label NAME]
Checks, each a PASS/FAIL line:
  loss     ce / aux / z / total at step 0: |sy - ref| <= tol * max(1, |ref|)
  logits   max |sy - ref| <= tol * max(1, max |ref|)
  grads    per checkpoint tensor: max |g_sy - g_ref| <= tol * max |g| over ALL tensors (a float32
           gradient's error scales with the largest gradients it is summed from) and the relative
           Frobenius error ||g_sy - g_ref|| / ||g_ref|| <= 10 * tol for tensors whose norm is at least
           1e-3 of the largest tensor norm (smaller ones are dominated by rounding)
  trace    loss_before_update of every step: |sy - ref| <= 10 * tol * max(1, |ref|)
  weights  final weights after the steps: max |w_sy - w_ref| <= 10 * tol * max(1, max |w_ref|)
Exit 0 when all pass.
"""
import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ref")
    ap.add_argument("sy")
    ap.add_argument("--tol", type=float, default=2e-4)
    ap.add_argument("--label", default="")
    a = ap.parse_args()
    tol, ok = a.tol, True

    def check(name, cond, detail):
        nonlocal ok
        print(f"{'PASS' if cond else 'FAIL'} [{a.label}] {name}: {detail}")
        ok &= bool(cond)

    rl = json.load(open(os.path.join(a.ref, "loss.json")))
    sl = json.load(open(os.path.join(a.sy, "loss.json")))
    for k in ("ce", "aux", "z", "total"):
        d = abs(sl[k] - rl[k])
        check(f"loss.{k}", d <= tol * max(1.0, abs(rl[k])), f"sy {sl[k]:.8f} ref {rl[k]:.8f} diff {d:.2e}")
    if "per_layer" in rl and rl["per_layer"]:
        for r, s in zip(rl["per_layer"], sl["per_layer"]):
            check(f"layer {r['layer']} counts", r["expert_counts"] == s["expert_counts"] and
                  r["kept_counts"] == s["kept_counts"], f"{s['expert_counts']} kept {s['kept_counts']}")

    lr_, ls_ = np.load(os.path.join(a.ref, "logits.npy")), np.load(os.path.join(a.sy, "logits.npy"))
    d = float(np.abs(lr_ - ls_).max())
    check("logits", lr_.shape == ls_.shape and d <= tol * max(1.0, float(np.abs(lr_).max())),
          f"shape {ls_.shape} max diff {d:.2e}")

    gr = safetensors_np.read_file(os.path.join(a.ref, "grads.safetensors"))
    gs = safetensors_np.read_file(os.path.join(a.sy, "grads.safetensors"))
    check("grad names", set(gr) == set(gs), f"{len(gs)} tensors; only ref: {sorted(set(gr) - set(gs))[:3]} "
          f"only sy: {sorted(set(gs) - set(gr))[:3]}")
    gmax = max(float(np.abs(g).max()) for g in gr.values())
    nmax = max(float(np.linalg.norm(g)) for g in gr.values())
    worst_abs, worst_rel, bad = 0.0, 0.0, []
    for name in sorted(set(gr) & set(gs)):
        r, s = gr[name].astype(np.float64), gs[name].astype(np.float64)
        if r.shape != s.shape:
            bad.append(f"{name} shape {s.shape} vs {r.shape}")
            continue
        da = float(np.abs(r - s).max())
        nr = float(np.linalg.norm(r))
        rel = float(np.linalg.norm(r - s)) / nr if nr >= 1e-3 * nmax and nr > 0 else 0.0
        worst_abs, worst_rel = max(worst_abs, da / gmax), max(worst_rel, rel)
        if da > tol * gmax or rel > 10 * tol:
            bad.append(f"{name} abs {da / gmax:.1e} rel {rel:.1e}")
    check("grads", not bad, f"{len(gr)} tensors, worst abs/max {worst_abs:.1e}, worst rel {worst_rel:.1e}"
          + (f"; {bad[:4]}" if bad else ""))

    tr, ts = json.load(open(os.path.join(a.ref, "trace.json"))), json.load(open(os.path.join(a.sy, "trace.json")))
    worst, n = 0.0, 0
    for r, s in zip(tr["steps"], ts["steps"]):
        for k in ("total", "ce", "aux", "z"):
            x, y = r["loss_before_update"][k], s["loss_before_update"][k]
            worst = max(worst, abs(x - y) / max(1.0, abs(x)))
            n += 1
    for k in ("total", "ce"):
        x, y = tr["final_loss"][k], ts["final_loss"][k]
        worst = max(worst, abs(x - y) / max(1.0, abs(x)))
    check("trace", len(tr["steps"]) == len(ts["steps"]) and worst <= 10 * tol,
          f"{len(ts['steps'])} steps, worst relative loss diff {worst:.1e} "
          f"(ref {tr['steps'][0]['loss_before_update']['total']:.5f} -> {tr['final_loss']['total']:.5f}, "
          f"sy -> {ts['final_loss']['total']:.5f})")

    wr = safetensors_np.read_file(os.path.join(a.ref, "final_weights.safetensors"))
    ws = safetensors_np.read_file(os.path.join(a.sy, "final_weights.safetensors"))
    worst = max(float(np.abs(wr[k].astype(np.float64) - ws[k]).max()) for k in wr if k in ws)
    wmax = max(float(np.abs(w).max()) for w in wr.values())
    check("final weights", worst <= 10 * tol * max(1.0, wmax), f"max diff {worst:.2e} (max |w| {wmax:.2f})")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
