"""The command line the per-family PyTorch references share (llama4_reference.py,
phimoe_reference.py): --model DIR --ids 1,2,3 [--out logits.npy] [--greedy N], or
--make-variant SRC DST."""
import argparse
import json
import os

import numpy as np
import torch

import safetensors_np


def main(doc, forward, make_variant):
    """forward(config, weights, ids) -> logits [T, vocab]; make_variant(src, dst)."""
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--model")
    ap.add_argument("--ids")
    ap.add_argument("--out")
    ap.add_argument("--greedy", type=int, default=0,
                    help="print the ids followed by N greedy ones (the whole prefix recomputed each step)")
    ap.add_argument("--make-variant", nargs=2, metavar=("SRC", "DST"))
    a = ap.parse_args()
    if a.make_variant:
        return make_variant(*a.make_variant)
    cfg = json.load(open(os.path.join(a.model, "config.json")))
    W = {n: torch.from_numpy(np.array(t, dtype=np.float32))
         for n, t in safetensors_np.read_checkpoint(a.model).items()}
    ids = [int(t) for t in a.ids.split(",")]
    with torch.no_grad():
        if a.out:
            np.save(a.out, forward(cfg, W, ids).numpy().astype(np.float32))
        for _ in range(a.greedy):
            ids.append(int(forward(cfg, W, ids)[-1].argmax()))
    if a.greedy:
        print(",".join(map(str, ids)))
