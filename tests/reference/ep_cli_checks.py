#!/usr/bin/python3
"""Checks for test_ep_cli.sh (switchyard commands under mpirun vs one process).

Subcommands:
  loads ONE_LOAD.json EP_LOAD.json EP_REPORT.json RANKS
      the per-layer expert loads (--load-json) of the mpirun run equal the single-process
      run's; the rank report (--ep-json) has RANKS ranks, and the rows the ranks received sum
      to the number of (token, expert) pairs routed. A failed check raises (exit 1).
"""
import argparse
import json
import sys


def check_loads(one_path, ep_path, rep_path, ranks):
    one, ep, rep, ranks = json.load(open(one_path)), json.load(open(ep_path)), json.load(open(rep_path)), int(ranks)
    a = [l["tokens_per_expert"] for l in one["layers"]]
    b = [l["tokens_per_expert"] for l in ep["layers"]]
    assert a == b, f"expert loads differ: one process {a}, {ranks} ranks {b}"
    assert len(rep["ranks"]) == ranks, rep
    rows = sum(l["rows_received"] for r in rep["ranks"] for l in r["layers"])
    assert rows == sum(map(sum, a)), f"rows received over ranks {rows} != pairs routed {sum(map(sum, a))}"
    print(f"loads equal, {ranks} ranks received {rows:.0f} rows = pairs routed")
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("loads", help="expert loads and rank report of an mpirun score run")
    p.add_argument("one_load")
    p.add_argument("ep_load")
    p.add_argument("ep_report")
    p.add_argument("ranks")
    a = ap.parse_args(argv)
    if a.cmd == "loads":
        return check_loads(a.one_load, a.ep_load, a.ep_report, a.ranks)
    return 2


if __name__ == "__main__":
    sys.exit(main())
