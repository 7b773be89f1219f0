#!/usr/bin/python3
"""Checks for test_logits_vs_torch.sh (Switchyard vs the PyTorch reference on tiny checkpoints).

Subcommands:
  loads SY_LOAD.json REF_ROUTING.json NAME
      the per-layer expert loads switchyard reported (score --load-json) equal the expert counts
      of hf_reference.py's routing (--routing-out) in every MoE layer; prints PASS [NAME], or
      FAIL [NAME] with the first differing layer and exits 1.
"""
import argparse
import json
import sys


def check_loads(sy_path, ref_path, name):
    sy = json.load(open(sy_path))
    ref = json.load(open(ref_path))
    sy_layers = {str(l["layer"]): l["tokens_per_expert"] for l in sy["layers"]}
    ref_layers = {k: v["expert_counts"] for k, v in ref["layers"].items()}
    if sy_layers != ref_layers:
        for k in sorted(set(sy_layers) | set(ref_layers), key=int):
            if sy_layers.get(k) != ref_layers.get(k):
                print(f"FAIL [{name}] expert load differs at layer {k}: switchyard {sy_layers.get(k)} reference {ref_layers.get(k)}")
                break
        return 1
    print(f"PASS [{name}] expert loads equal the reference routing in {len(ref_layers)} MoE layers")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("loads", help="switchyard expert loads == reference routing counts")
    p.add_argument("sy_load")
    p.add_argument("ref_routing")
    p.add_argument("name")
    a = ap.parse_args(argv)
    if a.cmd == "loads":
        return check_loads(a.sy_load, a.ref_routing, a.name)
    return 2


if __name__ == "__main__":
    sys.exit(main())
