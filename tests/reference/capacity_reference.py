#!/usr/bin/python3
"""Independent PyTorch reference for Switchyard's capacity policies (src/moe/capacity.h), written
from Capacity-Aware Inference (papers.md section 1: Algorithm 1 token drop, Algorithm 2 expanded
drop, v1 token reroute, device-level capacity, the DT metric) and Switchyard's documented rules,
not from capacity.cpp.

Usage (driven by test_capacity_vs_torch.sh):
  capacity_reference.py generate DIR [--seed N]   write DIR/cases.json + DIR/cases.bin
  capacity_reference.py selftest DIR              vectorised reference == scalar loop formulation
  capacity_reference.py check DIR                 compare DIR/results.{json,bin} (from sy_capacity)
                                                  with the reference; exit 1 on any mismatch

Case files (little-endian): cases.json is {"cases": [...]}, each case naming its parameters and the
byte offsets of scores [T,E] float32, ids [T,k] int32 and weights [T,k] float32 in cases.bin.
results.json holds, per case, "out_slots", the outcome counts (load_before, load_after, routed,
overflow, dropped, added, rerouted) and the offsets of out_ids [T,out_slots] int32 and out_weights
[T,out_slots] float32 in results.bin, or "error" when Switchyard threw.

Semantics (one place; the policies below implement exactly this):
  C     = ceil(gamma * T * k / E) in float64, at least 1 when T > 0.
  C_d   = ceil(gamma * T * k * n_d / E) for device d hosting n_d experts (device policy).
  priority of a pair (t, e) = scores[t, e]; ties keep the earlier token (device: then lower expert).
  s_t   = sum(router weights of t) / sum(scores[t, router ids of t]): weight of a pair the policy
          adds (expanded drop, reroute) is scores[t, e] * s_t; router pairs keep their weight.
  expanded (Algorithm 2): candidates of a token = its router pairs + every expert on the source
          device; each expert keeps the C candidates with the highest score, routed or not
          (masked_scores.topk(C, dim=0)); kept router pairs stay in their slots, added pairs
          follow in ascending expert id.
  renormalize: afterwards a token's surviving weights are rescaled to sum to 1 (the authors'
          renormalize_after_capacity_drop: weights / weights.sum()).
  skip_single_token: a decode step (the case's decode_step: every sequence of the forward call
          holds one token; the authors' sequence_length == 1) leaves the table as it is.
"""
import argparse
import json
import math
import os
import random
import sys

import numpy as np
import torch

NEG_INF = float("-inf")
POLICIES = ("none", "score", "order", "reverse", "random", "expanded", "reroute", "device")


# ----------------------------------------------------------------------------------------------
# Capacities and placement
# ----------------------------------------------------------------------------------------------

def expert_capacity(gamma, T, k, E):
    if T <= 0:
        return 0
    return max(1, math.ceil(gamma * float(T) * k / E))


def device_capacity(gamma, T, k, n_d, E):
    if T <= 0:
        return 0
    return max(1, math.ceil(gamma * float(T) * k * n_d / E))


def devices_of(placement, E):
    """[D] lists of expert ids (ascending) per device; an empty placement is one device."""
    if not placement:
        return [list(range(E))]
    D = max(placement) + 1
    return [[e for e in range(E) if placement[e] == d] for d in range(D)]


def contiguous_placement(E, D):
    """expert -> device, D contiguous blocks, the first E % D devices one expert larger."""
    base, extra = divmod(E, D)
    out = []
    for d in range(D):
        out += [d] * (base + (1 if d < extra else 0))
    return out


def capacity_slots(policy, k, E, placement):
    if policy != "expanded":
        return k
    return k + max(len(x) for x in devices_of(placement, E))


# ----------------------------------------------------------------------------------------------
# Tables <-> masks
# ----------------------------------------------------------------------------------------------

def pair_mask(ids, E):
    """ids [T,S] int64 with -1 for no pair -> bool [T,E]."""
    T = ids.shape[0]
    m = torch.zeros(T, E + 1, dtype=torch.bool)
    m.scatter_(1, torch.where(ids >= 0, ids, torch.full_like(ids, E)), True)
    return m[:, :E]


def keep_slots(ids, keep):
    """Router table with the pairs not in `keep` [T,E] replaced by -1."""
    held = keep.gather(1, ids.clamp(min=0)) & (ids >= 0)
    return torch.where(held, ids, torch.full_like(ids, -1))


# ----------------------------------------------------------------------------------------------
# Algorithm 1 (token drop by score) with the tie rule
# ----------------------------------------------------------------------------------------------

def column_threshold(masked, cap):
    """tau_j = the cap_j-th highest value of column j (candidates hold their priority, the rest
    -inf). KthValue as in Algorithm 1 when every column has the same capacity."""
    T = masked.shape[0]
    if bool((cap == cap[0]).all()):
        c = int(cap[0].clamp(1, T))
        return -torch.kthvalue(-masked, c, dim=0).values
    ordered = masked.sort(dim=0, descending=True).values
    return ordered.gather(0, (cap - 1).clamp(0, T - 1).unsqueeze(0)).squeeze(0)


def keep_top_per_column(prio, cand, cap):
    """Per column j, keep the cap_j highest-priority candidates; among candidates equal to the
    threshold, the earliest tokens. prio [T,E] float32, cand [T,E] bool, cap [E] int64."""
    T, E = prio.shape
    if T == 0 or E == 0:
        return cand.clone()
    masked = torch.where(cand, prio, torch.full_like(prio, NEG_INF))
    tau = column_threshold(masked, cap)                       # [E]
    above = cand & (masked > tau)
    at = cand & (masked == tau)
    room = cap - above.sum(0)
    keep = above | (at & (at.long().cumsum(0) <= room))
    fits = (cand.sum(0) <= cap).unsqueeze(0)
    return torch.where(fits, cand, keep) & (cap > 0).unsqueeze(0)


def keep_by_order(cand, C, reverse):
    """Per column keep the C earliest (or latest) candidate tokens."""
    if reverse:
        rank = cand.long().flip(0).cumsum(0).flip(0)
    else:
        rank = cand.long().cumsum(0)
    return cand & (rank <= C)


# ----------------------------------------------------------------------------------------------
# Policies: each returns (out_ids [T,S] int64, out_w [T,S] float64)
# ----------------------------------------------------------------------------------------------

def token_scale(scores, ids, weights):
    """s_t = sum(router weights) / sum(router scores), float64 [T]."""
    valid = ids >= 0
    w = torch.where(valid, weights.double(), torch.zeros_like(weights, dtype=torch.float64))
    s = scores.double().gather(1, ids.clamp(min=0))
    s = torch.where(valid, s, torch.zeros_like(s))
    return w.sum(1) / s.sum(1)


def token_drop(scores, ids, weights, C, policy):
    E = scores.shape[1]
    router = pair_mask(ids, E)
    cap = torch.full((E,), C, dtype=torch.long)
    if policy == "score":
        keep = keep_top_per_column(scores, router, cap)
    elif policy == "order":
        keep = keep_by_order(router, C, reverse=False)
    elif policy == "reverse":
        keep = keep_by_order(router, C, reverse=True)
    else:
        raise ValueError(policy)
    out = keep_slots(ids, keep)
    return out, torch.where(out >= 0, weights.double(), torch.zeros_like(weights, dtype=torch.float64))


def expanded_drop(scores, ids, weights, C, placement, source_device, out_slots):
    """Algorithm 2 of the paper: exp_mask = router pairs | the source device's experts;
    keep = topk(scores * exp_mask, C, dim=0) per expert column; final = exp_mask & keep."""
    T, E = scores.shape
    k = ids.shape[1]
    router = pair_mask(ids, E)
    local = torch.zeros(E, dtype=torch.bool)
    local[devices_of(placement, E)[source_device if placement else 0]] = True
    candidates = router | local.unsqueeze(0)
    cap = torch.full((E,), C, dtype=torch.long)
    final = keep_top_per_column(scores, candidates, cap)
    keep_router = final & router
    added = final & ~router

    out = torch.full((T, out_slots), -1, dtype=torch.long)
    out[:, :k] = keep_slots(ids, keep_router)
    expert = torch.arange(E).expand(T, E)
    order = torch.where(added, expert, torch.full_like(expert, E)).sort(dim=1).values
    extra = out_slots - k
    if extra > 0:
        take = order[:, :min(extra, E)]
        out[:, k:k + take.shape[1]] = torch.where(take < E, take, torch.full_like(take, -1))
    assert int(added.sum(1).max() if T else 0) <= extra, "added pairs exceed the slots"

    s_t = token_scale(scores, ids, weights)
    w = torch.zeros(T, out_slots, dtype=torch.float64)
    w[:, :k] = torch.where(out[:, :k] >= 0, weights.double(), torch.zeros(T, k, dtype=torch.float64))
    add_ids = out[:, k:]
    add_w = scores.double().gather(1, add_ids.clamp(min=0)) * s_t.unsqueeze(1)
    w[:, k:] = torch.where(add_ids >= 0, add_w, torch.zeros_like(add_w))
    return out, w


def device_drop(scores, ids, weights, gamma, placement):
    """Device-level capacity: the pairs sent to device d are bounded by C_d; the highest-priority
    ones are kept, ties by (token, expert) ascending (row-major order + stable sort)."""
    T, E = scores.shape
    k = ids.shape[1]
    router = pair_mask(ids, E)
    keep = torch.zeros_like(router)
    for experts in devices_of(placement, E):
        cols = torch.tensor(experts, dtype=torch.long)
        Cd = device_capacity(gamma, T, k, len(experts), E)
        cand = router[:, cols]
        prio = torch.where(cand, scores[:, cols], torch.full((T, len(experts)), NEG_INF))
        order = torch.sort(prio.reshape(-1), descending=True, stable=True).indices
        flat = torch.zeros(T * len(experts), dtype=torch.bool)
        flat[order[:Cd]] = True
        keep[:, cols] = flat.reshape(T, len(experts)) & cand
    out = keep_slots(ids, keep)
    return out, torch.where(out >= 0, weights.double(), torch.zeros_like(weights, dtype=torch.float64))


def reroute(scores, ids, weights, C, rounds):
    """v1 token reroute: in each round the pairs beyond an expert's top-C are masked for their
    token and the slot re-selects the token's best expert that is neither masked nor held (ties:
    lower id; slots of one token in ascending order); then a final score drop."""
    T, E = scores.shape
    k = ids.shape[1]
    cur = ids.clone()
    masked = torch.zeros(T, E, dtype=torch.bool)
    cap = torch.full((E,), C, dtype=torch.long)
    expert = torch.arange(E)
    for _ in range(rounds):
        held = pair_mask(cur, E)
        over = held & ~keep_top_per_column(scores, held, cap)
        if not bool(over.any()):
            break
        masked |= over
        slot_over = over.gather(1, cur.clamp(min=0)) & (cur >= 0)   # [T,k]
        for j in range(k):
            rows = slot_over[:, j]
            if not bool(rows.any()):
                continue
            held = pair_mask(cur, E)
            avail = ~masked & ~held
            cand = torch.where(avail, scores, torch.full_like(scores, NEG_INF))
            best = cand.argmax(dim=1)                  # first maximum: the lower expert id
            has = avail.any(dim=1)
            new = torch.where(has, best, torch.full_like(best, -1))
            cur[:, j] = torch.where(rows, new, cur[:, j])
    held = pair_mask(cur, E)
    keep = keep_top_per_column(scores, held, cap)
    out = keep_slots(cur, keep)

    s_t = token_scale(scores, ids, weights)
    router_w = weights.double()
    new_w = scores.double().gather(1, out.clamp(min=0)) * s_t.unsqueeze(1)
    same = out == ids
    w = torch.where(same, router_w, new_w)
    w = torch.where(out >= 0, w, torch.zeros_like(w))
    return out, w


def renormalize_rows(ids, weights, out_ids, out_w):
    target = torch.ones(out_w.shape[0], dtype=torch.float64)
    kept = out_w.sum(1)
    scale = torch.where(kept > 0, target / torch.where(kept > 0, kept, torch.ones_like(kept)),
                        torch.zeros_like(kept))
    return torch.where(out_ids >= 0, out_w * scale.unsqueeze(1), torch.zeros_like(out_w))


def apply_capacity(case, scores, ids, weights):
    """Reference apply_capacity. scores [T,E] float32, ids [T,k] int64, weights [T,k] float32.
    Returns (out_ids [T,S] int64, out_w [T,S] float64, counts dict). Random: ids/weights None."""
    T, E = scores.shape
    k = ids.shape[1]
    policy = case["policy"]
    placement = case["placement"]
    gamma = case["gamma"]
    S = capacity_slots(policy, k, E, placement)
    C = expert_capacity(gamma, T, k, E)

    decode = case["skip_single_token"] and case["decode_step"]
    if policy == "none" or decode:
        out = torch.full((T, S), -1, dtype=torch.long)
        out[:, :k] = ids
        w = torch.zeros(T, S, dtype=torch.float64)
        w[:, :k] = torch.where(ids >= 0, weights.double(), torch.zeros_like(weights, dtype=torch.float64))
    elif policy in ("score", "order", "reverse"):
        out, w = token_drop(scores, ids, weights, C, policy)
    elif policy == "expanded":
        out, w = expanded_drop(scores, ids, weights, C, placement, case["source_device"], S)
    elif policy == "device":
        out, w = device_drop(scores, ids, weights, gamma, placement)
    elif policy == "reroute":
        out, w = reroute(scores, ids, weights, C, case["reroute_rounds"])
    elif policy == "random":
        return None, None, None
    else:
        raise ValueError(policy)
    if case["renormalize"] and policy != "none" and not decode:
        w = renormalize_rows(ids, weights, out, w)
    return out, w, outcome_counts(ids, out, C, E, policy)


def outcome_counts(ids, out, C, E, policy):
    router = pair_mask(ids, E)
    kept = pair_mask(out, E)
    lb = router.sum(0)
    added = int((kept & ~router).sum())
    return {
        "load_before": lb.tolist(),
        "load_after": kept.sum(0).tolist(),
        "routed": int(lb.sum()),
        "overflow": int((lb - C).clamp(min=0).sum()),
        "dropped": int((router & ~kept).sum()),
        "added": added,
        "rerouted": added if policy == "reroute" else 0,
    }


# ----------------------------------------------------------------------------------------------
# Case generation
# ----------------------------------------------------------------------------------------------

class Blob:
    def __init__(self):
        self.parts = []
        self.size = 0

    def add(self, array):
        off = self.size
        b = np.ascontiguousarray(array).tobytes()
        self.parts.append(b)
        self.size += len(b)
        return off


def route(scores, k, renorm, scaling):
    """top-k descending, ties to the lower expert id (stable sort); weights float32 as a router
    would produce them (optionally renormalised, scaled)."""
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices[:, :k]
    w = scores.gather(1, order)
    if renorm:
        w = w / w.sum(1, keepdim=True)
    w = w * scaling
    return order.to(torch.int32), w.to(torch.float32)


def make_scores(rng, T, E, kind):
    """float32 [T,E] router probabilities of several shapes."""
    g = torch.Generator().manual_seed(rng.randrange(1 << 31))
    if kind in ("softmax", "sigmoid"):
        scale = rng.choice([0.05, 0.5, 1.0, 2.0, 4.0])
        logits = torch.randn(T, E, generator=g) * scale
        # a few hot experts, as real routers have
        if E > 1 and rng.random() < 0.6:
            hot = torch.randint(0, E, (max(1, E // 4),), generator=g)
            logits[:, hot] += rng.choice([0.5, 1.5, 3.0])
        return torch.softmax(logits, dim=1) if kind == "softmax" else torch.sigmoid(logits)
    if kind == "ties":  # few distinct values: many exact ties in rows and columns
        return (torch.randint(1, 5, (T, E), generator=g).float() / 8.0)
    if kind == "equal":  # every score equal
        return torch.full((T, E), 1.0 / E)
    if kind == "one_expert":  # expert 0 is everyone's first choice
        p = torch.softmax(torch.randn(T, E, generator=g), dim=1)
        p[:, 0] = 1.0
        return p
    if kind == "empty_experts":  # the upper half of the experts is never chosen
        logits = torch.randn(T, E, generator=g)
        logits[:, (E + 1) // 2:] -= 30.0
        return torch.softmax(logits, dim=1)
    raise ValueError(kind)


def random_placement(rng, E, style):
    if style == "empty" or E == 1 and style != "single":
        return [], 0
    if style == "single":
        return [0] * E, 0
    if style == "contiguous":
        D = rng.randint(1, min(E, 8))
        return contiguous_placement(E, D), rng.randrange(D)
    if style == "per_expert":
        return list(range(E)), rng.randrange(E)
    # uneven: a random permutation cut into D non-empty groups of random sizes
    D = rng.randint(2, min(E, 6)) if E >= 2 else 1
    perm = list(range(E))
    rng.shuffle(perm)
    cuts = sorted(rng.sample(range(1, E), D - 1))
    placement = [0] * E
    bounds = [0] + cuts + [E]
    for d in range(D):
        for e in perm[bounds[d]:bounds[d + 1]]:
            placement[e] = d
    return placement, rng.randrange(D)


def generate(out_dir, seed):
    rng = random.Random(seed)
    blob = Blob()
    cases = []

    def add(name, T, E, k, policy, gamma, kind="softmax", renorm_router=False, scaling=1.0,
            placement=None, source=0, renormalize=False, skip=True, rounds=3, cseed=0, stream=0,
            predrop=0.0, extra=None, decode=None):
        scores = make_scores(rng, T, E, kind)
        ids, w = route(scores, k, renorm_router, scaling)
        if predrop > 0:  # the table may already hold dropped pairs
            drop = torch.rand(T, k, generator=torch.Generator().manual_seed(rng.randrange(1 << 31))) < predrop
            drop[:, 0] = False  # every token keeps at least one pair (s_t stays defined)
            ids = torch.where(drop, torch.full_like(ids, -1), ids)
            w = torch.where(drop, torch.zeros_like(w), w)
        placement = placement or []
        c = {
            "name": f"{len(cases)}:{name}", "T": T, "E": E, "k": k, "policy": policy,
            "gamma": gamma, "renormalize": renormalize, "skip_single_token": skip,
            # a decode step: by default one-token calls (a batch decoding one token each is
            # generated explicitly below, and so is a one-token slice of a prefill)
            "decode_step": (T == 1) if decode is None else decode,
            "reroute_rounds": rounds, "seed": cseed, "rng_stream": stream,
            "score_func": "sigmoid" if kind == "sigmoid" else "softmax",
            "router_renormalize": renorm_router, "routed_scaling_factor": scaling,
            "placement": placement, "num_devices": (max(placement) + 1) if placement else 0,
            "source_device": source, "kind": kind,
            "scores_off": blob.add(scores.numpy().astype("<f4")),
            "ids_off": blob.add(ids.numpy().astype("<i4")),
            "weights_off": blob.add(w.numpy().astype("<f4")),
        }
        if extra:
            c.update(extra)
        cases.append(c)
        return len(cases) - 1

    Es = [1, 3, 4, 8, 12, 60]
    gammas = [0.5, 1.0, 1.25, 1.5, 2.0, 8.0]
    Ts = [1, 2, 3, 5, 7, 8, 16, 31, 64, 100, 128, 255, 300]

    def pick_k(E):
        return rng.choice(sorted({min(1, E), min(2, E), min(3, E), E}))

    def pick_T():
        return rng.choice(Ts) if rng.random() < 0.6 else rng.randint(1, 300)

    # 1. random sweep over every policy
    for policy in POLICIES:
        for i in range(130):
            E = rng.choice(Es)
            k = pick_k(E)
            T = pick_T()
            gamma = rng.choice(gammas)
            kind = rng.choice(["softmax", "softmax", "sigmoid"])
            renorm_router = kind == "softmax" and rng.random() < 0.5 or kind == "sigmoid" and rng.random() < 0.7
            scaling = rng.choice([1.0, 1.0, 2.5])
            style = rng.choice(["empty", "contiguous", "uneven", "per_expert"]) \
                if policy in ("expanded", "device") else rng.choice(["empty", "contiguous"])
            placement, source = random_placement(rng, E, style)
            add(f"sweep-{policy}", T, E, k, policy, gamma, kind, renorm_router, scaling, placement,
                source, renormalize=rng.random() < 0.25, skip=rng.random() < 0.8,
                rounds=rng.choice([1, 2, 3, 3, 5]), cseed=rng.randrange(1 << 40),
                stream=rng.randrange(1000))

    # 2. adversarial cases, every policy
    for policy in POLICIES:
        for kind in ("ties", "equal", "one_expert", "empty_experts"):
            for E, k in ((1, 1), (3, 1), (4, 2), (8, 3), (8, 8), (12, 2), (60, 4)):
                for gamma in (0.5, 1.0, 1.5):
                    T = rng.choice([2, 7, 16, 33, 100])
                    style = rng.choice(["empty", "uneven", "contiguous"]) if E > 1 else "empty"
                    placement, source = random_placement(rng, E, style)
                    add(f"adv-{policy}-{kind}", T, E, k, policy, gamma, kind,
                        placement=placement, source=source, rounds=3)
        # large gamma: nothing overflows, the table must come back bit for bit
        for E, k in ((1, 1), (4, 2), (8, 8), (60, 3), (12, 1)):
            for T in (1, 2, 50, 300):
                placement, source = random_placement(rng, E, rng.choice(["empty", "uneven"]))
                add(f"nodrop-{policy}", T, E, k, policy, float(E) / k + 1.0 if policy != "device" else 1000.0,
                    rng.choice(["softmax", "sigmoid", "ties"]), renorm_router=rng.random() < 0.5,
                    placement=placement, source=source, extra={"expect_identity": policy != "expanded"})
        # decode steps: skipped by default, processed when skip_single_token is off; a batch of
        # sequences decoding one token each is a decode step, a one-token prefill slice is not
        for skip in (True, False):
            for E, k in ((4, 2), (8, 8), (60, 3)):
                placement, source = random_placement(rng, E, "uneven")
                add(f"single-{policy}-skip{int(skip)}", 1, E, k, policy, 0.5, placement=placement,
                    source=source, skip=skip, extra={"expect_identity": skip})
                add(f"batched-decode-{policy}-skip{int(skip)}", rng.choice([5, 16, 40]), E, k,
                    policy, 0.5, placement=placement, source=source, skip=skip, decode=True,
                    extra={"expect_identity": skip})
            add(f"prefill-slice-{policy}", 1, 8, 2, policy, 0.5,
                placement=contiguous_placement(8, 2), source=1, decode=False)
        # tables that already hold dropped pairs
        for E, k in ((4, 2), (8, 3), (12, 12)):
            add(f"predropped-{policy}", rng.choice([9, 40, 120]), E, k, policy, 1.0, predrop=0.3,
                placement=random_placement(rng, E, "uneven")[0] or [], source=0)
        # renormalize after the policy
        for E, k in ((4, 2), (8, 3), (60, 4)):
            add(f"renorm-{policy}", rng.choice([16, 77, 256]), E, k, policy, rng.choice([0.5, 1.0]),
                rng.choice(["softmax", "sigmoid"]), renorm_router=True, renormalize=True,
                placement=contiguous_placement(E, min(E, 4)), source=rng.randrange(min(E, 4)))

    # 3. placements with uneven device sizes, every source device (expanded and device policies)
    for policy in ("expanded", "device"):
        for E, sizes in ((12, [1, 5, 6]), (12, [11, 1]), (8, [1, 1, 6]), (60, [3, 20, 37]), (4, [2, 1, 1])):
            perm = list(range(E))
            rng.shuffle(perm)
            placement = [0] * E
            at = 0
            for d, n in enumerate(sizes):
                for e in perm[at:at + n]:
                    placement[e] = d
                at += n
            for source in range(len(sizes)):
                for gamma in (0.5, 1.0, 1.25, 2.0):
                    add(f"uneven-{policy}", rng.choice([10, 64, 200]), E, rng.choice([1, 2, 3]), policy,
                        gamma, rng.choice(["softmax", "sigmoid", "ties"]), placement=placement, source=source)

    # 4. capacity rounding at integer boundaries (and non-dyadic gammas)
    # (0.1 * 48 * 5 / 8 = 3.0000000000000004 in float64, so C = 4 by the stated formula)
    for gamma, T, k, E in ((1.5, 8, 2, 4), (1.25, 16, 1, 4), (1.1, 50, 1, 1), (0.3, 10, 1, 1),
                           (0.7, 30, 2, 6), (1.1, 100, 3, 3), (0.1, 48, 5, 8), (0.1, 96, 5, 12),
                           (0.1, 24, 5, 6), (0.1, 14, 5, 7)):
        for policy in ("score", "order", "expanded", "device", "reroute"):
            for kind in ("ties", "one_expert"):
                add(f"rounding-{policy}-g{gamma}", T, E, k, policy, gamma, kind)

    # 5. random drop: reproducibility (same seed and stream twice) and seed sensitivity
    for i in range(40):
        E = rng.choice([4, 8, 12, 60])
        k = pick_k(E)
        T = rng.choice([32, 100, 300])
        gamma = rng.choice([0.5, 1.0])
        cseed, stream = rng.randrange(1 << 40), rng.randrange(100)
        state = rng.getstate()
        a = add("random-twin-a", T, E, k, "random", gamma, "ties", cseed=cseed, stream=stream)
        rng.setstate(state)
        add("random-twin-b", T, E, k, "random", gamma, "ties", cseed=cseed, stream=stream,
            extra={"twin_of": a})
        rng.setstate(state)
        add("random-seed-c", T, E, k, "random", gamma, "ties", cseed=cseed + 1, stream=stream,
            extra={"variant_of": a})

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "cases.bin"), "wb") as f:
        for p in blob.parts:
            f.write(p)
    with open(os.path.join(out_dir, "cases.json"), "w") as f:
        json.dump({"cases": cases}, f)
    print(f"generated {len(cases)} cases in {out_dir}")


# ----------------------------------------------------------------------------------------------
# Comparison
# ----------------------------------------------------------------------------------------------

def load_case(case, data):
    T, E, k = case["T"], case["E"], case["k"]
    scores = np.frombuffer(data, "<f4", T * E, case["scores_off"]).reshape(T, E)
    ids = np.frombuffer(data, "<i4", T * k, case["ids_off"]).reshape(T, k)
    w = np.frombuffer(data, "<f4", T * k, case["weights_off"]).reshape(T, k)
    return torch.from_numpy(scores.copy()), torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(w.copy())


def load_result(res, T, data):
    S = res["out_slots"]
    ids = np.frombuffer(data, "<i4", T * S, res["ids_off"]).reshape(T, S).astype(np.int64)
    w = np.frombuffer(data, "<f4", T * S, res["weights_off"]).reshape(T, S)
    return ids, w


def describe(case):
    keys = ("name", "T", "E", "k", "policy", "gamma", "kind", "renormalize", "skip_single_token",
            "reroute_rounds", "seed", "rng_stream", "placement", "source_device", "decode_step")
    return ", ".join(f"{k}={case[k]}" for k in keys)


def first_difference(ids_a, w_a, ids_b, w_b, rel):
    """(token, slot, what) of the first differing element in row-major order, or None."""
    a = w_a.astype(np.float64)
    b = w_b.astype(np.float64)
    bad_id = ids_a != ids_b
    bad_w = (np.abs(a - b) > rel * np.maximum(np.abs(a), np.abs(b))) | ((ids_a < 0) & ((a != 0) | (b != 0)))
    bad = bad_id | bad_w
    if not bad.any():
        return None
    t, s = np.argwhere(bad)[0]
    return int(t), int(s), "id" if bad_id[t, s] else "weight"


def row_dump(ids, w, t):
    return "[" + ", ".join(f"{int(i)}:{float(x):.9g}" for i, x in zip(ids[t], w[t])) + "]"


def check_random(case, scores, ids, weights, got_ids, got_w, res):
    """Random drop: only invariants (same slots, subset of the router's pairs, load <= C, an
    overflowing expert keeps exactly C, counts consistent)."""
    T, E = scores.shape
    k = ids.shape[1]
    C = expert_capacity(case["gamma"], T, k, E)
    errs = []
    if got_ids.shape != (T, k):
        return [f"out_slots {got_ids.shape[1]} != k {k}"]
    ids_np = ids.numpy()
    ok = (got_ids == ids_np) | (got_ids == -1)
    if not ok.all():
        t, s = np.argwhere(~ok)[0]
        errs.append(f"token {t} slot {s}: id {got_ids[t, s]} is neither the router's {ids_np[t, s]} nor -1")
    router = pair_mask(ids, E)
    kept = pair_mask(torch.from_numpy(got_ids), E)
    lb, la = router.sum(0), kept.sum(0)
    single = case["skip_single_token"] and case["decode_step"]
    want_la = lb if single else lb.clamp(max=C)
    if not torch.equal(la, want_la):
        e = int((la != want_la).nonzero()[0])
        errs.append(f"expert {e}: keeps {int(la[e])} of {int(lb[e])} pairs, expected {int(want_la[e])} (C={C})")
    if not case["renormalize"]:
        wk = np.where(got_ids >= 0, weights.numpy(), 0.0).astype(np.float32)
        if not np.array_equal(wk, got_w):
            t, s = np.argwhere(wk != got_w)[0]
            errs.append(f"token {t} slot {s}: weight {got_w[t, s]!r}, expected {wk[t, s]!r}")
    want = outcome_counts(ids, torch.from_numpy(got_ids), C, E, "random")
    for key, v in want.items():
        if res[key] != v:
            errs.append(f"count {key}: switchyard {res[key]}, expected {v} (from its own table)")
    return errs


def check(work):
    with open(os.path.join(work, "cases.json")) as f:
        cases = json.load(f)["cases"]
    with open(os.path.join(work, "cases.bin"), "rb") as f:
        cdata = f.read()
    with open(os.path.join(work, "results.json")) as f:
        results = json.load(f)["results"]
    with open(os.path.join(work, "results.bin"), "rb") as f:
        rdata = f.read()
    if len(results) != len(cases):
        print(f"FAIL: {len(results)} results for {len(cases)} cases")
        return 1

    failures = 0
    by_policy = {}
    outputs = {}
    seed_pairs = seed_differ = 0
    for i, (case, res) in enumerate(zip(cases, results)):
        scores, ids, weights = load_case(case, cdata)
        T, E = scores.shape
        k = ids.shape[1]
        msgs = []
        if "error" in res:
            msgs.append(f"switchyard threw: {res['error']}")
        else:
            got_ids, got_w = load_result(res, T, rdata)
            outputs[i] = (got_ids, got_w)
            if case["policy"] == "random":
                msgs += check_random(case, scores, ids, weights, got_ids, got_w, res)
                if "twin_of" in case:
                    a_ids, a_w = outputs[case["twin_of"]]
                    if not (np.array_equal(a_ids, got_ids) and np.array_equal(a_w, got_w)):
                        msgs.append(f"same seed and stream as case {case['twin_of']} but a different result")
                if "variant_of" in case:
                    a_ids, _ = outputs[case["variant_of"]]
                    if int(pair_mask(ids, E).sum(0).sub(expert_capacity(case["gamma"], T, k, E)).clamp(min=0).sum()) > 0:
                        seed_pairs += 1
                        seed_differ += int(not np.array_equal(a_ids, got_ids))
            else:
                want_ids, want_w, want_counts = apply_capacity(case, scores, ids, weights)
                want_ids = want_ids.numpy()
                want_w32 = want_w.numpy().astype(np.float32)
                if got_ids.shape != want_ids.shape:
                    msgs.append(f"table shape {got_ids.shape}, expected {want_ids.shape} (out_slots)")
                else:
                    d = first_difference(got_ids, got_w, want_ids, want_w32, 1e-6)
                    if d:
                        t, s, what = d
                        msgs.append(f"first difference ({what}) at token {t}, slot {s}:\n"
                                    f"      switchyard {row_dump(got_ids, got_w, t)}\n"
                                    f"      reference  {row_dump(want_ids, want_w32, t)}\n"
                                    f"      router     {row_dump(ids.numpy(), weights.numpy(), t)}")
                    if case.get("expect_identity") and not case["renormalize"]:
                        pad_ids = np.full_like(got_ids, -1)
                        pad_ids[:, :k] = ids.numpy()
                        pad_w = np.zeros_like(got_w)
                        pad_w[:, :k] = np.where(ids.numpy() >= 0, weights.numpy(), 0)
                        if not (np.array_equal(got_ids, pad_ids) and
                                np.array_equal(got_w.view(np.uint32), pad_w.view(np.uint32))):
                            msgs.append("nothing overflows, but the table is not the input bit for bit")
                for key, v in want_counts.items():
                    if res[key] != v:
                        msgs.append(f"count {key}: switchyard {res[key]}, reference {v}")
        stat = by_policy.setdefault(case["policy"], [0, 0])
        stat[0] += 1
        if msgs:
            stat[1] += 1
            failures += 1
            if failures <= 25:
                C = expert_capacity(case["gamma"], T, k, E)
                print(f"FAIL case {describe(case)} (C={C})")
                for m in msgs:
                    print("    " + m)
    if seed_pairs and seed_differ == 0:
        print(f"FAIL: random drop gave the same result for {seed_pairs} pairs of different seeds")
        failures += 1
    for p in POLICIES:
        if p in by_policy:
            n, f = by_policy[p]
            print(f"  {p:9s} {n:5d} cases, {n - f:5d} pass, {f:4d} fail")
    print(f"random drop: {seed_differ}/{seed_pairs} seed pairs with overflow gave different drops")
    print(f"{'FAIL' if failures else 'PASS'}: {len(cases) - failures}/{len(cases)} cases agree with the reference")
    return 1 if failures else 0


# ----------------------------------------------------------------------------------------------
# Self-test: a plain scalar (loop) formulation of the same rules, to catch slips in the
# vectorised one above. `selftest DIR` compares both on the generated cases.
# ----------------------------------------------------------------------------------------------

def scalar_apply(case, scores, ids, weights):
    T, E = scores.shape
    k = ids.shape[1]
    sc = scores.tolist()
    rid = ids.tolist()
    rw = weights.double().tolist()
    policy, gamma, placement = case["policy"], case["gamma"], case["placement"]
    S = capacity_slots(policy, k, E, placement)
    C = expert_capacity(gamma, T, k, E)
    out = [[-1] * S for _ in range(T)]
    w = [[0.0] * S for _ in range(T)]
    s_t = []
    for t in range(T):
        num = sum(rw[t][j] for j in range(k) if rid[t][j] >= 0)
        den = sum(sc[t][rid[t][j]] for j in range(k) if rid[t][j] >= 0)
        s_t.append(num / den)

    def users(table, e):
        return [t for t in range(T) if e in table[t]]

    decode = case["skip_single_token"] and case["decode_step"]
    if policy == "none" or decode:
        for t in range(T):
            for j in range(k):
                out[t][j] = rid[t][j]
                w[t][j] = rw[t][j] if rid[t][j] >= 0 else 0.0
    elif policy in ("score", "order", "reverse", "expanded"):
        keep = set()
        added = set()
        local = devices_of(placement, E)[case["source_device"] if placement else 0]
        for e in range(E):
            us = users(rid, e)
            key = {"score": lambda t: (-sc[t][e], t), "order": lambda t: t,
                   "reverse": lambda t: -t, "expanded": lambda t: (-sc[t][e], t)}[policy]
            # Algorithm 2: a local expert's candidates are all tokens, routed or not
            cands = list(range(T)) if policy == "expanded" and e in local else us
            ranked = sorted(cands, key=key)
            keep |= {(t, e) for t in ranked[:C] if t in us}
            added |= {(t, e) for t in ranked[:C] if t not in us}
        for t in range(T):
            for j in range(k):
                if (t, rid[t][j]) in keep:
                    out[t][j] = rid[t][j]
                    w[t][j] = rw[t][j]
            j = k
            for e in range(E):
                if (t, e) in added:
                    out[t][j] = e
                    w[t][j] = sc[t][e] * s_t[t]
                    j += 1
    elif policy == "device":
        keep = set()
        for experts in devices_of(placement, E):
            pairs = [(t, e) for t in range(T) for e in experts if e in rid[t]]
            pairs.sort(key=lambda p: (-sc[p[0]][p[1]], p[0], p[1]))
            keep |= set(pairs[:device_capacity(gamma, T, k, len(experts), E)])
        for t in range(T):
            for j in range(k):
                if (t, rid[t][j]) in keep:
                    out[t][j] = rid[t][j]
                    w[t][j] = rw[t][j]
    elif policy == "reroute":
        cur = [row[:] for row in rid]
        masked = [set() for _ in range(T)]

        def overflowed(table):
            over = set()
            for e in range(E):
                ranked = sorted(users(table, e), key=lambda t: (-sc[t][e], t))
                over |= {(t, e) for t in ranked[C:]}
            return over

        for _ in range(case["reroute_rounds"]):
            over = overflowed(cur)
            if not over:
                break
            for t, e in over:
                masked[t].add(e)
            for t in range(T):
                for j in range(k):
                    if (t, cur[t][j]) in over:
                        avail = [e for e in range(E) if e not in masked[t] and e not in cur[t]]
                        cur[t][j] = max(avail, key=lambda e: (sc[t][e], -e)) if avail else -1
        over = overflowed(cur)
        for t in range(T):
            for j in range(k):
                e = cur[t][j]
                if e < 0 or (t, e) in over:
                    continue
                out[t][j] = e
                w[t][j] = rw[t][j] if e == rid[t][j] else sc[t][e] * s_t[t]
    if case["renormalize"] and policy != "none" and not decode:
        for t in range(T):
            target = 1.0
            kept = sum(w[t])
            w[t] = [x * target / kept if kept > 0 else 0.0 for x in w[t]]
    return out, w


def selftest(work, limit):
    with open(os.path.join(work, "cases.json")) as f:
        cases = json.load(f)["cases"]
    with open(os.path.join(work, "cases.bin"), "rb") as f:
        cdata = f.read()
    bad = n = 0
    for case in cases:
        if case["policy"] == "random" or case["T"] * case["E"] > limit:
            continue
        scores, ids, weights = load_case(case, cdata)
        a_ids, a_w, _ = apply_capacity(case, scores, ids, weights)
        b_ids, b_w = scalar_apply(case, scores, ids, weights)
        n += 1
        b_ids = np.array(b_ids, dtype=np.int64).reshape(a_ids.shape)
        b_w = np.array(b_w, dtype=np.float64).reshape(a_w.shape)
        d = first_difference(a_ids.numpy(), a_w.numpy(), b_ids, b_w, 1e-12)
        if d:
            bad += 1
            t, s, what = d
            print(f"SELFTEST MISMATCH {describe(case)}: {what} at ({t},{s})\n"
                  f"   vectorised {row_dump(a_ids.numpy(), a_w.numpy(), t)}\n"
                  f"   scalar     {row_dump(b_ids, b_w, t)}")
    print(f"selftest: {n - bad}/{n} cases agree between the vectorised and the scalar reference")
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("dir")
    g.add_argument("--seed", type=int, default=20250305)
    c = sub.add_parser("check")
    c.add_argument("dir")
    st = sub.add_parser("selftest")
    st.add_argument("dir")
    st.add_argument("--limit", type=int, default=4000, help="largest T*E to run the slow scalar form on")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    if args.cmd == "generate":
        generate(args.dir, args.seed)
        return 0
    if args.cmd == "selftest":
        return selftest(args.dir, args.limit)
    return check(args.dir)


if __name__ == "__main__":
    sys.exit(main())
