#!/usr/bin/python3
"""DualSparse-MoE's neuron importance computed independently (PyTorch, hf_reference.py's model)
and compared with `switchyard profile-neurons`' file.

Usage: neuron_profile_checks.py MODEL_DIR IMPORTANCE.safetensors IDS WINDOW

For every MoE layer, expert e and FFN neuron n, over the (token, expert) pairs the router
selects (each window of WINDOW tokens is its own sequence): a = x . w1_n, b = x . w3_n and
  silu: sum silu(a), abs_silu: sum |silu(a)|, silu_up: sum silu(a) b, abs_silu_up: sum |silu(a) b|.
"""
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference  # noqa: E402
import safetensors_np  # noqa: E402


def main():
    model_dir, path, ids_text, window = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    ids = [int(x) for x in ids_text.split(",")]
    model = hf_reference.Model(model_dir)
    sums, pairs = {}, {}
    original = model.moe

    def moe(L, x, layer_idx, record=True, xr=None):
        H = x.shape[-1]
        rflat = (x if xr is None else xr).reshape(-1, H)
        chosen, _ = model.route(L, rflat)
        for e, (gate, up, _) in enumerate(L["experts"]):
            tok, _ = torch.where(chosen == e)
            a = (rflat[tok] @ gate.t()).double()
            b = (rflat[tok] @ up.t()).double()
            s = torch.nn.functional.silu(a)
            acc = sums.setdefault(layer_idx, np.zeros((len(L["experts"]), 4, gate.shape[0])))
            acc[e, 0] += s.sum(0).numpy()
            acc[e, 1] += s.abs().sum(0).numpy()
            acc[e, 2] += (s * b).sum(0).numpy()
            acc[e, 3] += (s * b).abs().sum(0).numpy()
            pairs.setdefault(layer_idx, np.zeros(len(L["experts"])))[e] += tok.numel()
        return original(L, x, layer_idx, record, xr)

    model.moe = moe
    for begin in range(0, len(ids), window):
        model.run([ids[begin:begin + window]])
    got = safetensors_np.read_file(path)
    worst = 0.0
    for layer, ref in sums.items():
        mine = np.asarray(got[f"layers.{layer}.neuron_importance"], dtype=np.float64)
        assert mine.shape == ref.shape, (layer, mine.shape, ref.shape)
        scale = np.abs(ref).max(axis=2, keepdims=True) + 1e-6
        err = float((np.abs(mine - ref) / scale).max())
        worst = max(worst, err)
        got_pairs = np.asarray(got[f"layers.{layer}.pairs"])
        assert np.array_equal(got_pairs, pairs[layer]), (layer, got_pairs, pairs[layer])
    ok = worst < 1e-4
    print(f"{len(sums)} MoE layers, pairs per expert equal, worst relative metric error {worst:.1e} "
          f"(tol 1e-4)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
