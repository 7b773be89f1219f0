#!/usr/bin/python3
"""Checks for test_replay.sh (switchyard replay against an independent numpy computation).

Subcommands:
  case DIR   DIR holds one case's outputs (see test_replay.sh): the traces none.safetensors
             (score --trace, dropless) and drop.safetensors (recorded under score drop, gamma 1.0,
             2 devices), their --load-json files none_load.json / drop_load.json, the replay
             --json files none.json / score1.json / score1_d2.json / drop_same.json and the
             heatmaps none.svg / score1_d2.svg / score1_d2_before.svg. Checks:
               - replay none matches the recording; its loads == the score run's loads == the
                 bincount of the trace's router ids; the trace has several forward calls and its
                 dropless ids are the router ids;
               - replay with score drop at gamma 1.0 on 1 and 2 devices gives exactly the loads
                 numpy derives per call / token slice / expert: min(N_e, C) with
                 C = ceil(gamma * T_slice * k / E), DT = sum ReLU(N_e - C) / sum N_e;
               - the score-drop trace keeps, per call / slice / expert, exactly the C
                 highest-scoring pairs (ties keep the earlier token), and replaying it with the
                 same policy matches the record;
               - the heatmaps are well-formed SVG with layers x experts cells and per-layer notes.
             Prints the first 20 failed checks and exits 1 if any failed.
"""
import argparse
import json
import math
import os
import sys
import xml.etree.ElementTree as ET

import numpy as np

from safetensors_np import read_file


def slices(T, D):  # Placement::token_begin: contiguous slices of a call's tokens
    return [(T * i // D, T * (i + 1) // D) for i in range(D)]


def expected_score_drop(tr, gamma, D, E):
    """Per layer: loads before / after and overflow of score drop, from the router ids."""
    res = {}
    for l, t in tr.items():
        ids, k = t["router_ids"], t["router_ids"].shape[1]
        before, after, overflow, first = np.zeros(E, np.int64), np.zeros(E, np.int64), 0, 0
        for T in t["call_tokens"]:
            for b, e in slices(int(T), D):
                n = np.bincount(ids[first + b:first + e].ravel(), minlength=E)
                before += n
                if e - b <= 1:  # one-token slices are left alone (skip_single_token)
                    after += n
                    continue
                C = max(1, math.ceil(gamma * (e - b) * k / E))
                after += np.minimum(n, C)
                overflow += int(np.maximum(n - C, 0).sum())
            first += int(T)
        res[l] = (before, after, overflow)
    return res


def check_case(d):
    def load(name):
        with open(os.path.join(d, name)) as f:
            return json.load(f)

    def layers_of(stats):
        return {l["layer"]: l for l in stats["layers"]}

    def trace(path):
        t = read_file(os.path.join(d, path))
        out = {}
        for key, arr in t.items():
            _, l, field = key.split(".", 2)
            out.setdefault(int(l), {})[field] = arr
        return out

    errors = []

    def check(cond, what):
        if not cond:
            errors.append(what)

    none_tr = trace("none.safetensors")
    E = next(iter(none_tr.values()))["scores"].shape[1]
    score_load = layers_of(load("none_load.json"))
    replay_none = load("none.json")
    check(replay_none["matches_recording"] is True, "replay none: matches_recording")
    rn = layers_of(replay_none["expert_load"])
    check(sorted(rn) == sorted(score_load) == sorted(none_tr), f"active layers {sorted(rn)} {sorted(score_load)} {sorted(none_tr)}")
    for l, t in none_tr.items():
        counts = np.bincount(t["router_ids"].ravel(), minlength=E).tolist()
        check(rn[l]["tokens_per_expert"] == score_load[l]["tokens_per_expert"] == counts,
              f"layer {l}: replay none {rn[l]['tokens_per_expert']} vs score {score_load[l]['tokens_per_expert']} vs trace {counts}")
        check(t["call_tokens"].sum() == t["scores"].shape[0], f"layer {l}: call tokens")
        check(len(t["call_tokens"]) >= 2, f"layer {l}: expected several forward calls, got {t['call_tokens']}")
        check(np.array_equal(t["ids"][:, :t["router_ids"].shape[1]], t["router_ids"]), f"layer {l}: dropless ids == router ids")

    for out, D in (("score1.json", 1), ("score1_d2.json", 2)):
        got = layers_of(load(out)["expert_load"])
        for l, (before, after, overflow) in expected_score_drop(none_tr, 1.0, D, E).items():
            check(got[l]["tokens_per_expert_before_policy"] == before.tolist(), f"{out} layer {l}: before")
            check(got[l]["tokens_per_expert"] == after.tolist(),
                  f"{out} layer {l}: after {got[l]['tokens_per_expert']} != numpy {after.tolist()}")
            check(abs(got[l]["dropped_token_fraction"] - overflow / before.sum()) < 1e-12,
                  f"{out} layer {l}: DT {got[l]['dropped_token_fraction']} != {overflow / before.sum()}")
        check(any(got[l]["pairs_dropped"] > 0 for l in got), f"{out}: gamma 1.0 dropped nothing")

    # The trace recorded under score drop: each slice keeps, per expert, the C highest scores.
    drop_tr = trace("drop.safetensors")
    for l, t in drop_tr.items():
        ids, rid, scores, k, first = t["ids"], t["router_ids"], t["scores"], t["router_ids"].shape[1], 0
        for T in t["call_tokens"]:
            for b, e in slices(int(T), 2):
                kept = ids[first + b:first + e]
                routed = rid[first + b:first + e]
                C = max(1, math.ceil(1.0 * (e - b) * k / E)) if e - b > 1 else None
                for x in range(E):
                    tokens = [i for i in range(e - b) if x in routed[i]]
                    if C is not None and len(tokens) > C:  # stable: ties keep the earlier token
                        tokens = sorted(tokens, key=lambda i: (-scores[first + b + i, x], i))[:C]
                    want = sorted(tokens)
                    have = sorted(i for i in range(e - b) if x in kept[i])
                    check(have == want, f"drop trace layer {l} call@{first} slice {b}:{e} expert {x}: kept {have}, numpy {want}")
            first += int(T)
    drop_load = layers_of(load("drop_load.json"))
    same = load("drop_same.json")
    check(same["matches_recording"] is True, "replay of the score-drop trace: matches_recording")
    for l, row in layers_of(same["expert_load"]).items():
        check(row["tokens_per_expert"] == drop_load[l]["tokens_per_expert"], f"drop replay layer {l}: after")
        check(row["tokens_per_expert_before_policy"] == drop_load[l]["tokens_per_expert_before_policy"], f"drop replay layer {l}: before")

    ns = "{http://www.w3.org/2000/svg}"
    for svg in ("none.svg", "score1_d2.svg", "score1_d2_before.svg"):
        root = ET.parse(os.path.join(d, svg)).getroot()
        cells = [r for r in root.iter(ns + "rect") if r.get("class") == "cell"]
        check(len(cells) == len(none_tr) * E, f"{svg}: {len(cells)} cells, expected {len(none_tr)} x {E}")
        texts = [t.text or "" for t in root.iter(ns + "text")]
        check(any(t.startswith("max/mean") for t in texts), f"{svg}: no per-layer notes")

    for e in errors[:20]:
        print("  " + e)
    return 1 if errors else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("case", help="numpy checks of one case's traces, replays and heatmaps")
    p.add_argument("dir")
    a = ap.parse_args(argv)
    if a.cmd == "case":
        return check_case(a.dir)
    return 2


if __name__ == "__main__":
    sys.exit(main())
