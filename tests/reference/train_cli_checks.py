#!/usr/bin/python3
"""Checks for test_train_cli.sh (`switchyard train` end to end).

Subcommands (each prints one summary line and exits 0 on success, 1 on failure):
  log TRAIN_LOG.jsonl
      the log runs from step 1 to 20 with 2 validation entries and checkpoint entries at 10 and 20, every row has lr / loss / ce /
      aux / z / grad_norm / tokens_per_s / load_max_over_mean, and ce falls by more than 0.3.
  compare-runs DIR_A DIR_B TOL
      two runs have the same logged steps; loss / ce / aux / z / val_ce / grad_norm agree within
      TOL (relative to max(1, |value|)), and the final weights (DIR/model, through its index) have
      the same names and differ by at most 10 * TOL.
  aux-free DIR_OFF DIR_ON
      aux-loss-free balancing: the mean load max/mean over steps >= 60 of the run with bias
      updates (DIR_ON) is below 0.75 times that of the run without (DIR_OFF).
  noisy MODEL_DIR
      noisy top-k gating: the checkpoint holds 2 gate.noise.weight matrices, none all zero.
  checkpoint MODEL_DIR [--min-plt X]
      the manifest's shards have its sizes and zlib CRC-32s, the index equals its weight map,
      every trainable tensor's exp_avg_sq is saved and not all zero, and PLT >= X when given.
"""
import argparse
import json
import os
import sys


def check_log(path):
    rows = [json.loads(l) for l in open(path)]
    saves = [r for r in rows if "checkpoint" in r]
    rows = [r for r in rows if "checkpoint" not in r]
    ok_saves = [r["step"] for r in saves] == [10, 20] and all(
        r["checkpoint"]["bytes"] > 0 and r["checkpoint"]["seconds"] > 0 for r in saves)
    steps = [r["step"] for r in rows]
    val = [r for r in rows if "val_ce" in r]
    ok = ok_saves and steps[0] == 1 and steps[-1] == 20 and len(val) == 2 and rows[-1]["ce"] < rows[0]["ce"] - 0.3
    for r in rows:
        ok &= all(k in r for k in ("lr", "loss", "ce", "aux", "z", "grad_norm", "tokens_per_s", "load_max_over_mean"))
    print(f"steps {steps}, checkpoints at {[r['step'] for r in saves]}, ce {rows[0]['ce']:.3f} -> {rows[-1]['ce']:.3f}, val {[round(v['val_ce'], 3) for v in val]}")
    return 0 if ok else 1


def compare_runs(a, b, tol):
    import numpy as np
    import safetensors_np
    tol = float(tol)
    ra = [json.loads(l) for l in open(a + "/train_log.jsonl")]
    rb = [json.loads(l) for l in open(b + "/train_log.jsonl")]
    worst = 0.0
    ok = [r["step"] for r in ra] == [r["step"] for r in rb]
    for x, y in zip(ra, rb):
        for k in ("loss", "ce", "aux", "z", "val_ce", "grad_norm"):
            if k in x:
                ok &= k in y
                worst = max(worst, abs(x[k] - y.get(k, 1e9)) / max(1.0, abs(x[k])))
    wa = safetensors_np.read_checkpoint(a + "/model")
    wb = safetensors_np.read_checkpoint(b + "/model")
    ok &= set(wa) == set(wb)
    wd = max(float(np.abs(wa[k].astype(np.float64) - wb[k]).max()) for k in wa)
    print(f"{len(ra)} log entries, worst relative loss diff {worst:.1e}, max weight diff {wd:.1e} (tol {tol})")
    return 0 if ok and worst <= tol and wd <= 10 * tol else 1


def check_aux_free(dir_off, dir_on):
    def late_load(d):
        rows = [json.loads(l) for l in open(d + "/train_log.jsonl")]
        late = [r["load_max_over_mean"] for r in rows if r["step"] >= 60 and "checkpoint" not in r]
        return sum(late) / len(late)
    off, on = late_load(dir_off), late_load(dir_on)
    print(f"expert load max/mean over steps 60-100: bias updates off {off:.2f}, on {on:.2f}")
    return 0 if on < 0.75 * off else 1


def check_noisy(path):
    import numpy as np
    import safetensors_np
    w = safetensors_np.read_checkpoint(path)
    noise = [k for k in w if k.endswith("gate.noise.weight")]
    print(f"{len(noise)} noise matrices, max |W_noise| {max(float(np.abs(w[k]).max()) for k in noise):.2e}")
    return 0 if len(noise) == 2 and all(np.abs(w[k]).max() > 0 for k in noise) else 1


def check_checkpoint(model_dir, min_plt=None):
    """The manifest as an independent reader sees it: every shard it lists has the recorded size
    and zlib CRC-32; the index maps every weight to the shard the manifest names; every trainable
    tensor has optimizer moments that are not all zero (a rank's moments were lost before), and
    PLT is at least min_plt when given."""
    import zlib
    import numpy as np
    import safetensors_np
    state = json.load(open(model_dir + "/trainer_state.json"))
    ck = state["checkpoint"]
    bad = []
    for name, info in ck["files"].items():
        data = open(os.path.join(model_dir, name), "rb").read()
        if len(data) != info["bytes"] or zlib.crc32(data) != info["crc32"]:
            bad.append(f"{name}: size/CRC differ from the manifest")
    index = json.load(open(model_dir + "/model.safetensors.index.json"))["weight_map"]
    if index != ck["weights"]:
        bad.append("the index and the manifest disagree")
    zero = []
    for name, shard in ck["moments"].items():
        m = safetensors_np.read_file(os.path.join(model_dir, shard))
        if not np.any(m[name + ".exp_avg_sq"]):
            zero.append(name)
    if zero:
        bad.append(f"{len(zero)} tensors with all-zero exp_avg_sq, e.g. {zero[0]}")
    plt = state.get("pec", {}).get("plt", 0.0)
    if min_plt is not None and not plt >= float(min_plt):
        bad.append(f"PLT {plt} < {min_plt}")
    experts = sum(1 for n in ck["moments"] if ".experts." in n)
    print(f"{len(ck['files'])} shards checked, {len(ck['moments'])} moment pairs ({experts} of experts), "
          f"PLT {100 * plt:.3f}%" + ("; " + "; ".join(bad) if bad else ""))
    return 1 if bad else 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("checkpoint", help="a checkpoint's shards, index and moments")
    p.add_argument("model_dir")
    p.add_argument("--min-plt", default=None)
    p = sub.add_parser("log", help="train_log.jsonl of the single-process run")
    p.add_argument("log")
    p = sub.add_parser("compare-runs", help="two runs' losses and final weights within TOL")
    p.add_argument("dir_a")
    p.add_argument("dir_b")
    p.add_argument("tol")
    p = sub.add_parser("aux-free", help="bias updates even out the expert load")
    p.add_argument("dir_off")
    p.add_argument("dir_on")
    p = sub.add_parser("noisy", help="W_noise trained and saved")
    p.add_argument("safetensors")
    a = ap.parse_args(argv)
    if a.cmd == "checkpoint":
        return check_checkpoint(a.model_dir, a.min_plt)
    if a.cmd == "log":
        return check_log(a.log)
    if a.cmd == "compare-runs":
        return compare_runs(a.dir_a, a.dir_b, a.tol)
    if a.cmd == "aux-free":
        return check_aux_free(a.dir_off, a.dir_on)
    if a.cmd == "noisy":
        return check_noisy(a.safetensors)
    return 2


if __name__ == "__main__":
    sys.exit(main())
