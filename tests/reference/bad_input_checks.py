#!/usr/bin/python3
"""Helpers for test_bad_input.sh (breaking a good checkpoint on purpose).

Subcommands:
  edit-header FILE EXPR   rewrite the JSON header of the safetensors FILE in place: EXPR is
                          Python executed with the parsed header dict bound to `h` (e.g.
                          'h["model.norm.weight"]["dtype"] = "I16"'); the header is re-encoded,
                          space-padded to a multiple of 8 bytes, and the data buffer kept as is.
"""
import argparse
import json
import struct
import sys


def edit_header(path, expr):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    h = json.loads(data[8:8 + n])
    ns = {"h": h, "json": json, "struct": struct, "sys": sys}
    exec(expr, ns)  # EXPR may edit h in place or rebind it
    h = ns["h"]
    new = json.dumps(h).encode()
    new += b" " * ((8 - len(new) % 8) % 8)
    open(path, "wb").write(struct.pack("<Q", len(new)) + new + data[8 + n:])
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("edit-header", help="rewrite a safetensors header with a Python expression on `h`")
    p.add_argument("file")
    p.add_argument("expr")
    a = ap.parse_args(argv)
    if a.cmd == "edit-header":
        return edit_header(a.file, a.expr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
