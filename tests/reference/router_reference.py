#!/usr/bin/env python3
"""Independent PyTorch reference for Switchyard's router (src/moe/router.{h,cpp}).

Writes routing cases (every score function, selection bias, group-limited top-k,
renormalisation, scaling; noisy top-k gating; expert choice), runs the sy_route driver on
them and compares, in float64 torch written from the papers' / Hugging Face semantics:

  softmax | sigmoid            p = softmax | sigmoid(logits); choice = p + bias; groups mask 0.0;
                               ids = top-k(choice); w = p[ids]
  softmax-topk | sigmoid-topk  choice = logits + bias; groups mask -inf; ids = top-k(choice);
                               w = softmax(logits[ids]) | sigmoid(logits[ids]); scores = p
  then renormalise (w / (sum w + eps)) and scale.  Ties: the lower id (stable sort).
  noisy (Shazeer 2017)         H = float32(logits + noise), noise from the driver; then the
                               softmax-topk reference on H; eps = noise / softplus(noise_logits)
                               must look N(0, 1).
  expert choice (Zhou 2022)    S = softmax(logits); expert e takes the min(C, T) tokens of largest
                               S[:, e] (ties: the earlier token), C = ceil(cf * T / E).

Selections decided by a gap below 1e-4 (where float32 rounding could legally reorder) are not
compared, and must be rare; cases marked exact (hand-made ties) are always compared.
Usage: router_reference.py SY_ROUTE WORK_DIR.  Exit 0 = all pass, 1 = a mismatch.
"""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

TOL = 1e-6          # absolute on values <= 1, relative above
DECISIVE = 1e-4     # absolute gap on logits-scale choices; relative on probabilities


def group_size_choice(E):
    for g in (4, 3, 2):
        if E % g == 0:
            return g
    return 1


def ks_for(E):
    return sorted({k for k in (1, 2, 3, E) if k <= E})


def stable_desc(values):
    """Indices sorted by value descending, ties by lower index (values: 1-D float64 tensor)."""
    return torch.sort(values, descending=True, stable=True).indices


def ref_route(case):
    """Returns ids [T,k], weights [T,k], scores [T,E], gap [T] (the smallest deciding gap)."""
    c = case["config"]
    T, E, K = case["num_tokens"], case["num_experts"], c["top_k"]
    x = torch.tensor(case["logits"], dtype=torch.float64).view(T, E)
    bias = torch.tensor(case["bias"], dtype=torch.float64) if case.get("bias") is not None else torch.zeros(E, dtype=torch.float64)
    score = c["score"]
    softmax = score in ("softmax", "softmax-topk")
    first = score.endswith("-topk")
    p = torch.softmax(x, dim=-1) if softmax else torch.sigmoid(x)
    ids = torch.zeros(T, K, dtype=torch.int64)
    w = torch.zeros(T, K, dtype=torch.float64)
    gaps = torch.full((T,), math.inf, dtype=torch.float64)

    def gap(a, b):  # absolute for logits, relative for probabilities
        if first:
            return a - b
        scale = max(abs(a), abs(b))
        return 0.0 if scale == 0 else (a - b) / scale

    G, TG = c.get("num_groups", 1), c.get("topk_groups", 1)
    for t in range(T):
        choice = (x[t] if first else p[t]) + bias
        if G > 1:
            per = E // G
            members = choice.view(G, per)
            if c.get("group_score", "top2_sum") == "max" or per < 2:
                gs = members.max(dim=-1).values
            else:
                gs = torch.topk(members, 2, dim=-1).values.sum(dim=-1)
            gorder = stable_desc(gs)
            for i in range(min(TG, G - 1)):
                gaps[t] = min(gaps[t], gap(gs[gorder[i]].item(), gs[gorder[i + 1]].item()))
            keep = torch.zeros(G, dtype=torch.bool)
            keep[gorder[:TG]] = True
            mask = ~keep.repeat_interleave(per)
            choice = choice.masked_fill(mask, -math.inf if first else 0.0)
        order = stable_desc(choice)
        for i in range(min(K, E - 1)):
            a, b = choice[order[i]].item(), choice[order[i + 1]].item()
            gaps[t] = min(gaps[t], math.inf if b == -math.inf else gap(a, b))
        sel = order[:K]
        ids[t] = sel
        if score == "softmax-topk":
            wt = torch.softmax(x[t, sel], dim=-1)
        elif score == "sigmoid-topk":
            wt = torch.sigmoid(x[t, sel])
        else:
            wt = p[t, sel]
        if c.get("renormalize", False):
            wt = wt / (wt.sum() + c.get("renormalize_epsilon", 0.0))
        w[t] = wt * c.get("routed_scaling_factor", 1.0)
    return ids, w, p, gaps


def ref_expert_choice(case):
    T, E, cf = case["num_tokens"], case["num_experts"], case["capacity_factor"]
    x = torch.tensor(case["logits"], dtype=torch.float64).view(T, E)
    s = torch.softmax(x, dim=-1)
    C = min(math.ceil(cf * T / E - 1e-9), T)
    ids = torch.full((T, E), -1, dtype=torch.int64)
    w = torch.zeros(T, E, dtype=torch.float64)
    decisive = torch.ones(E, dtype=torch.bool)
    for e in range(E):
        order = stable_desc(s[:, e])
        chosen = order[:C]
        ids[chosen, e] = e
        w[chosen, e] = s[chosen, e]
        if E > 1 and 0 < C < T:
            a, b = s[order[C - 1], e].item(), s[order[C], e].item()
            if (a - b) / max(a, b) < DECISIVE:
                decisive[e] = False
    return ids, w, s, decisive, C


def f32(a):
    return [float(v) for v in np.asarray(a, dtype=np.float32).ravel()]


def make_cases():
    rng = np.random.default_rng(20250711)
    cases = []
    variants = [
        # name, renormalize, eps, scale, bias, groups, group_score
        ("plain", False, 0.0, 1.0, False, False, "max"),
        ("renorm", True, 0.0, 1.0, False, False, "max"),
        ("renorm eps x2.5", True, 1e-3, 2.5, False, False, "max"),
        ("bias", False, 0.0, 1.0, True, False, "max"),
        ("bias group top2 renorm x2.5", True, 1e-20, 2.5, True, True, "top2_sum"),
        ("group max", False, 0.0, 1.0, False, True, "max"),
    ]
    for score in ("softmax", "sigmoid", "softmax-topk", "sigmoid-topk"):
        for vname, renorm, eps, scale, use_bias, groups, gscore in variants:
            for E in (1, 3, 8, 60):
                for K in ks_for(E):
                    cfg = dict(top_k=K, score=score, renormalize=renorm, renormalize_epsilon=eps,
                               routed_scaling_factor=scale, group_score=gscore)
                    if groups:
                        g = group_size_choice(E)
                        if g == 1:
                            continue
                        tg = g // 2
                        if K > tg * (E // g):
                            tg = g
                        cfg.update(num_groups=g, topk_groups=tg)
                    for T in (1, 7, 33):
                        # Score-first bias must stay below the sigmoid floor; logits-scale otherwise.
                        bscale = 0.04 if not score.endswith("-topk") else 0.5
                        cases.append(dict(
                            name=f"{score} {vname} E={E} k={K} T={T}", mode="route", num_tokens=T, num_experts=E,
                            config=cfg, logits=f32(rng.uniform(-3, 3, T * E)),
                            bias=f32(rng.uniform(-bscale, bscale, E)) if use_bias else None))
    # Exact ties (hand-made): equal logits in a row, duplicated rows, ties at the k boundary.
    for score in ("softmax", "sigmoid", "softmax-topk", "sigmoid-topk"):
        for E, K in ((5, 2), (8, 3), (6, 6)):
            base = rng.integers(-2, 3, size=(3, E)).astype(np.float32)
            rows = base[rng.integers(0, 3, size=9)]
            cases.append(dict(name=f"{score} ties E={E} k={K}", mode="route", num_tokens=9, num_experts=E, exact=True,
                              config=dict(top_k=K, score=score, renormalize=True), logits=f32(rows)))
    # Noisy top-k gating.
    for score in ("softmax-topk", "sigmoid-topk", "softmax"):
        for E in (3, 8, 60):
            for K in ks_for(E):
                T = 17
                cases.append(dict(name=f"noisy {score} E={E} k={K}", mode="noisy", num_tokens=T, num_experts=E,
                                  config=dict(top_k=K, score=score), logits=f32(rng.uniform(-3, 3, T * E)),
                                  noise_logits=f32(rng.uniform(-4, 1, T * E)), seed=int(rng.integers(1 << 62)),
                                  stream=int(E * 10 + K)))
    # Large noisy case for the eps statistics.
    cases.append(dict(name="noisy statistics", mode="noisy", num_tokens=1024, num_experts=16,
                      config=dict(top_k=2, score="softmax-topk"), logits=f32(rng.normal(0, 1, 1024 * 16)),
                      noise_logits=f32(rng.normal(0, 1, 1024 * 16)), seed=7, stream=3))
    # Expert choice.
    for E in (1, 3, 8, 60):
        for T in (1, 2, 5, 17, 64):
            for cf in (0.5, 1.0, 1.25, 2.0, 8.0):
                cases.append(dict(name=f"expert choice E={E} T={T} cf={cf}", mode="expert_choice", num_tokens=T,
                                  num_experts=E, capacity_factor=cf, logits=f32(rng.uniform(-3, 3, T * E))))
    for E, T in ((3, 10), (8, 31)):
        base = rng.integers(-2, 3, size=(3, E)).astype(np.float32)
        rows = base[rng.integers(0, 3, size=T)]
        cases.append(dict(name=f"expert choice ties E={E} T={T}", mode="expert_choice", num_tokens=T, num_experts=E,
                          capacity_factor=1.0, exact=True, logits=f32(rows)))
    return cases


class Checker:
    def __init__(self):
        self.failures = 0
        self.compared = 0
        self.skipped = 0

    def fail(self, msg):
        self.failures += 1
        if self.failures <= 20:
            print("FAIL " + msg)

    def close(self, name, what, got, ref):
        got = np.asarray(got, dtype=np.float64).ravel()
        ref = np.asarray(ref, dtype=np.float64).ravel()
        err = np.abs(got - ref) / np.maximum(1.0, np.abs(ref))
        if err.size and err.max() > TOL:
            i = int(err.argmax())
            self.fail(f"[{name}] {what}: worst element {i}: got {got[i]!r}, reference {ref[i]!r} (error {err[i]:.3g})")


def check_route(chk, case, out, H=None):
    name, T, E, K = case["name"], case["num_tokens"], case["num_experts"], case["config"]["top_k"]
    ref_case = case if H is None else dict(case, logits=H, bias=None)
    ids, w, p, gaps = ref_route(ref_case)
    got_ids = np.asarray(out["ids"]).reshape(T, K)
    got_w = np.asarray(out["weights"], dtype=np.float64).reshape(T, K)
    got_s = np.asarray(out["scores"], dtype=np.float64).reshape(T, E)
    chk.close(name, "scores", got_s, p.numpy())
    for t in range(T):
        if not case.get("exact") and gaps[t] < DECISIVE:
            chk.skipped += 1
            continue
        chk.compared += 1
        if not np.array_equal(got_ids[t], ids[t].numpy()):
            chk.fail(f"[{name}] token {t}: ids {got_ids[t].tolist()}, reference {ids[t].tolist()} (gap {gaps[t]:.3g})")
            continue
        chk.close(name, f"token {t} weights", got_w[t], w[t].numpy())


def check_noisy(chk, case, out):
    T, E = case["num_tokens"], case["num_experts"]
    noise = np.asarray(out["noise"], dtype=np.float32)
    H = (np.asarray(case["logits"], dtype=np.float32) + noise).astype(np.float32)
    check_route(chk, case, out, H=[float(v) for v in H])
    # eps = noise / softplus(noise_logits) is the sampled N(0, 1).
    nl = torch.tensor(case["noise_logits"], dtype=torch.float64)
    sp = torch.nn.functional.softplus(nl, beta=1.0, threshold=1e9).numpy()
    return noise.astype(np.float64) / sp


def check_expert_choice(chk, case, out):
    name, T, E = case["name"], case["num_tokens"], case["num_experts"]
    ids, w, s, decisive, C = ref_expert_choice(case)
    got_ids = np.asarray(out["ids"]).reshape(T, E)
    got_w = np.asarray(out["weights"], dtype=np.float64).reshape(T, E)
    chk.close(name, "affinity", np.asarray(out["scores"]).reshape(T, E), s.numpy())
    for e in range(E):
        if (got_ids[:, e] == e).sum() != C:
            chk.fail(f"[{name}] expert {e} took {(got_ids[:, e] == e).sum()} tokens, capacity {C}")
        if not case.get("exact") and not decisive[e]:
            chk.skipped += 1
            continue
        chk.compared += 1
        if not np.array_equal(got_ids[:, e], ids[:, e].numpy()):
            diff = np.nonzero(got_ids[:, e] != ids[:, e].numpy())[0].tolist()
            chk.fail(f"[{name}] expert {e}: choice differs at tokens {diff}")
            continue
        chk.close(name, f"expert {e} weights", got_w[:, e], w[:, e].numpy())


def main():
    driver, work = sys.argv[1], Path(sys.argv[2])
    work.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    cases = make_cases()
    (work / "cases.json").write_text(json.dumps({"cases": cases}))
    r = subprocess.run([driver, str(work / "cases.json"), str(work / "out.json")], capture_output=True, text=True)
    if r.returncode != 0:
        print(f"FAIL sy_route exited {r.returncode}: {r.stderr.strip()}")
        return 1
    outs = json.loads((work / "out.json").read_text())["cases"]
    if len(outs) != len(cases):
        print(f"FAIL sy_route returned {len(outs)} cases for {len(cases)}")
        return 1
    chk = Checker()
    eps_all = []
    counts = {}
    for case, out in zip(cases, outs):
        mode = case["mode"]
        counts[mode] = counts.get(mode, 0) + 1
        if mode == "route":
            check_route(chk, case, out)
        elif mode == "noisy":
            eps = check_noisy(chk, case, out)
            if case["name"] == "noisy statistics":
                eps_all = eps
        else:
            check_expert_choice(chk, case, out)
    n = len(eps_all)
    mean, var = float(np.mean(eps_all)), float(np.var(eps_all))
    if abs(mean) > 5 / math.sqrt(n) or abs(var - 1) > 5 * math.sqrt(2 / n):
        chk.fail(f"[noisy statistics] eps over {n} draws: mean {mean:.4f}, variance {var:.4f}; expected N(0, 1)")
    if chk.skipped > 0.02 * (chk.compared + chk.skipped):
        chk.fail(f"{chk.skipped} of {chk.compared + chk.skipped} selections undecided at gap {DECISIVE}: sample biased")
    summary = ", ".join(f"{v} {k}" for k, v in counts.items())
    if chk.failures:
        print(f"FAIL router vs torch: {chk.failures} mismatches ({summary})")
        return 1
    print(f"PASS router vs torch: {summary} cases; {chk.compared} selections compared exactly, {chk.skipped} "
          f"undecided skipped; weights and scores within {TOL}; noise eps mean {mean:.4f} variance {var:.4f} (n={n})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
