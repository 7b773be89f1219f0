#!/usr/bin/python3
"""Compare Switchyard logits with the PyTorch reference's logits, with a tolerance from the numerics.

Usage:
  /usr/bin/python3 compare_npy.py ACTUAL.npy EXPECTED.npy --dtype bf16|f16|f32 [--label NAME]
                                  [--depth K | --model DIR] [--c C] [--act-dtype f32|bf16|f16]

Both arrays are logits [tokens, vocab] or [seqs, tokens, vocab]. NaN in both at the same place
is padding (hf_reference.py pads unequal-length sequences with NaN) and is skipped.

Tolerance:  tol = C * eps * sqrt(K) * scale
  eps    float32 machine epsilon 2^-23 (the engine and the reference both compute in float32 from
         the same stored weights; --act-dtype bf16/f16 switches eps to 2^-8 / 2^-11 for an engine
         that rounds activations, e.g. for bf16 GEMM inputs).
  K      accumulation length: --depth, or hidden_size * num_hidden_layers from --model DIR/config.json
         (default 65536). Differing float32 summation orders give rounding errors that behave like a
         random walk: about eps * sqrt(n) * |typical term sum| for a dot product of length n, and the
         errors of successive layers add up through the residual stream, so hidden * layers is a
         stated, generous stand-in for the total number of roundings feeding one logit.
  scale  max(1, max|expected|): logit errors are relative to the logits' own magnitude.
  C      default 16: the maximum over ~1e5..1e6 compared elements of a random-walk error sits at
         ~4-5 standard deviations, times a factor ~3 for amplification by RMSNorm / softmax Jacobians.
         This is an engineering constant, not a proof. Measured: float32 vs float64 reference logits
         of random tiny models (H 32..512, 2..6 layers, BF16 weights) use 0.5%..4% of this tolerance,
         so it is generous for random weights; trained models with outlier activations amplify more.
         selfcheck_reference.py checks that float32 vs float64 stays inside it.
  --dtype is the checkpoint's stored weight dtype. Both sides upcast the same stored values, so it
  does not change the tolerance; it is printed so a log says what was compared.
A near-tie in top-k routing can legitimately flip an expert choice and exceed any such tolerance;
the argmax agreement is printed to help tell that apart from a real bug.
Exit status: 0 pass, 1 fail (or shape / NaN mismatch).
"""
import argparse
import json
import math
import os
import sys

import numpy as np

EPS = {"f32": 2.0 ** -23, "bf16": 2.0 ** -8, "f16": 2.0 ** -11}


def main(argv=None):
    ap = argparse.ArgumentParser(description="compare logit arrays with a numerics-derived tolerance")
    ap.add_argument("actual")
    ap.add_argument("expected")
    ap.add_argument("--dtype", required=True, choices=("bf16", "f16", "f32"), help="stored weight dtype")
    ap.add_argument("--label", default="", help="name printed with the result")
    ap.add_argument("--depth", type=int, help="accumulation length K (default hidden*layers or 65536)")
    ap.add_argument("--model", help="checkpoint dir; K = hidden_size * num_hidden_layers from its config")
    ap.add_argument("--c", type=float, default=16.0, help="safety constant C (default 16)")
    ap.add_argument("--act-dtype", default="f32", choices=("f32", "bf16", "f16"),
                    help="precision the engine rounds activations to (default f32)")
    args = ap.parse_args(argv)

    label = f"[{args.label}] " if args.label else ""
    actual = np.load(args.actual).astype(np.float64)
    expected = np.load(args.expected).astype(np.float64)
    if actual.shape != expected.shape:
        print(f"{label}FAIL shape mismatch: actual {actual.shape} vs expected {expected.shape}")
        return 1
    if actual.ndim == 2:
        actual, expected = actual[None], expected[None]
    if actual.ndim != 3:
        print(f"{label}FAIL expected [tokens, vocab] or [seqs, tokens, vocab], got {actual.shape}")
        return 1

    nan_a, nan_e = np.isnan(actual), np.isnan(expected)
    if (nan_a != nan_e).any():
        s, t, v = np.argwhere(nan_a != nan_e)[0]
        print(f"{label}FAIL NaN mismatch at seq {s} token {t} vocab {v}: "
              f"actual {actual[s, t, v]} expected {expected[s, t, v]}")
        return 1
    if np.isinf(actual).any() or np.isinf(expected).any():
        print(f"{label}FAIL infinite logits present")
        return 1

    depth = args.depth
    if depth is None and args.model:
        with open(os.path.join(args.model, "config.json")) as f:
            cfg = json.load(f)
        depth = cfg["hidden_size"] * cfg["num_hidden_layers"]
    depth = depth or 65536
    valid = ~nan_e
    scale = max(1.0, float(np.abs(expected[valid]).max())) if valid.any() else 1.0
    tol = args.c * EPS[args.act_dtype] * math.sqrt(depth) * scale

    err = np.where(valid, np.abs(actual - expected), -1.0)
    s, t, v = np.unravel_index(int(np.argmax(err)), err.shape)
    max_err = float(err[s, t, v])
    tok_valid = valid[:, :, 0]
    am = np.argmax(np.where(valid, actual, -np.inf), -1) == np.argmax(np.where(valid, expected, -np.inf), -1)
    agree, total = int(am[tok_valid].sum()), int(tok_valid.sum())
    ok = max_err <= tol
    print(f"{label}{'PASS' if ok else 'FAIL'} weights={args.dtype} act={args.act_dtype} "
          f"max_abs_err={max_err:.3e} tol={tol:.3e} (C={args.c:g} eps={EPS[args.act_dtype]:.3e} "
          f"K={depth} scale={scale:.3g}) rel_to_tol={max_err / tol:.3f}")
    print(f"{label}worst: seq {s} token {t} vocab {v} actual {actual[s, t, v]:.9g} expected {expected[s, t, v]:.9g}")
    print(f"{label}argmax agreement: {agree}/{total} tokens")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
