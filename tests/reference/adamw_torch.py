#!/usr/bin/python3
"""torch.optim.AdamW + torch.nn.utils.clip_grad_norm_ on given tensors, for adamw_test's
PyTorch cross-check of Switchyard's AdamW (src/train/adamw.cpp).

Usage: adamw_torch.py IN.safetensors OUT.safetensors LR1,LR2,... MAX_NORM
IN holds "p.<name>" (initial float32 values) and "g<s>.<name>" (the gradient of step s, 0-based).
Two parameter groups as the trainer: weight decay 0.1 for tensors with ndim >= 2, none otherwise;
betas (0.9, 0.95), eps 1e-8. Two runs from the same start:
  "noclip": per step set the group lr, step;
  "clip":   per step clip_grad_norm_(all, MAX_NORM), set the group lr, step.
OUT gets "<run>.p.<name>", "<run>.m.<name>" (exp_avg), "<run>.v.<name>" (exp_avg_sq);
OUT.norms the clip run's pre-clip norm of each step, one per line; OUT.capability torch's CPU
capability ("AVX2", "AVX512", "DEFAULT"...: which kernels, hence which roundings, torch used).
"""
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402


def run(t, names, lrs, max_norm, out, tag):
    params = {n: torch.tensor(t["p." + n], dtype=torch.float32, requires_grad=True) for n in names}
    groups = [{"params": [params[n] for n in names if params[n].dim() >= 2], "weight_decay": 0.1},
              {"params": [params[n] for n in names if params[n].dim() < 2], "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=1.0, betas=(0.9, 0.95), eps=1e-8)
    norms = []
    for s, lr in enumerate(lrs):
        for n in names:
            params[n].grad = torch.tensor(t[f"g{s}.{n}"], dtype=torch.float32)
        if max_norm > 0:
            norms.append(float(torch.nn.utils.clip_grad_norm_(list(params.values()), max_norm)))
        for g in opt.param_groups:
            g["lr"] = lr
        opt.step()
    for n in names:
        st = opt.state[params[n]]
        out[f"{tag}.p.{n}"] = params[n].detach().numpy()
        out[f"{tag}.m.{n}"] = st["exp_avg"].numpy()
        out[f"{tag}.v.{n}"] = st["exp_avg_sq"].numpy()
    return norms


def main():
    src, dst, lrs, max_norm = sys.argv[1], sys.argv[2], [float(x) for x in sys.argv[3].split(",")], float(sys.argv[4])
    torch.set_num_threads(1)
    t = safetensors_np.read_file(src)
    names = sorted(n[2:] for n in t if n.startswith("p."))
    out = {}
    run(t, names, lrs, 0.0, out, "noclip")
    norms = run(t, names, lrs, max_norm, out, "clip")
    safetensors_np.write_file(dst, out)
    with open(dst + ".norms", "w") as f:
        f.write("".join(f"{x!r}\n" for x in norms))
    cap = re.search(r"CPU capability usage: (\w+)", torch.__config__.show())
    with open(dst + ".capability", "w") as f:
        f.write((cap.group(1) if cap else "unknown") + "\n")


if __name__ == "__main__":
    main()
