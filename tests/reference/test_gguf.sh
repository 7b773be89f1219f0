#!/usr/bin/env bash
# GGUF against two independent implementations:
#  - tests/reference/gguf_reference.py (numpy, written from the format definitions) writes a
#    file with every metadata value type and a tensor of every block format Switchyard reads
#    (F32, F16, BF16, Q8_0, Q4_0, Q4_K, Q6_K, MXFP4; random blocks); Switchyard's reader must
#    give the same metadata and, bit for bit, the same dequantized values;
#  - Hugging Face's JavaScript GGUF parser (@huggingface/gguf, tests/gguf/package.json) must
#    read the same metadata, dims, types and data offsets from that file as Switchyard does,
#    and must read a file Switchyard's writer made exactly as it was meant;
#  - Switchyard's Q8_0 / Q4_0 / MXFP4 quantizers must produce the blocks of the reference rounding
#    (ggml's quantize_row_*_ref, re-implemented in numpy here) byte for byte.
# usage: test_gguf.sh SWITCHYARD_BIN WORK_DIR   (sy_gguf from $SY_GGUF or next to WORK_DIR)
# Exit: 0 all equal, 1 mismatch or error, 77 node or the npm package missing (CTest: skipped).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="${2:-$(mktemp -d)}"
mkdir -p "$work"
tool="${SY_GGUF:-$(dirname "$work")/sy_gguf}"
py=/usr/bin/python3
if ! command -v node >/dev/null 2>&1 || [ ! -d "$here/gguf/node_modules/@huggingface/gguf" ]; then
  echo "SKIP: test_gguf needs node and @huggingface/gguf: run scripts/install-deps.sh" >&2
  exit 77
fi
"$py" -c "import numpy" 2>/dev/null || { echo "SKIP: test_gguf needs $py with numpy" >&2; exit 77; }
[ -x "$tool" ] || { echo "FAIL: sy_gguf not found at $tool (build target sy_gguf)" >&2; exit 1; }

rm -rf "$work"/{ref,sy,mine}
mkdir -p "$work"/{ref,sy,mine}
"$py" "$here/reference/gguf_reference.py" write "$work/ref.gguf"
"$py" "$here/reference/gguf_reference.py" dequant "$work/ref.gguf" "$work/ref"
"$tool" dump "$work/ref.gguf" "$work/sy"
node "$here/gguf/hf_gguf_dump.mjs" "$work/ref.gguf" >"$work/hf_ref.json"

"$py" - "$work" <<'PY'
import json, sys
import numpy as np
work = sys.argv[1]
names = {0: "F32", 1: "F16", 30: "BF16", 8: "Q8_0", 2: "Q4_0", 12: "Q4_K", 14: "Q6_K", 39: "MXFP4"}
failures = 0
def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    failures += 0 if ok else 1

sy_meta = json.load(open(f"{work}/sy/meta.json"))
sy_t = json.load(open(f"{work}/sy/tensors.json"))
hf = json.load(open(f"{work}/hf_ref.json"))
for key, v in hf["metadata"].items():
    s = sy_meta.get(key)
    same = s is not None and s["type"] == v["type"] and s.get("element") == v.get("element")
    if same:
        a, b = s["value"], v["value"]
        if v["type"] in ("u64", "i64"):
            same = str(a) == str(b)
        elif isinstance(b, float) and v["type"] == "f32":
            same = float(np.float32(a)) == float(np.float32(b))
        elif isinstance(b, list) and v.get("element") == "f32":
            same = [float(np.float32(x)) for x in a] == [float(np.float32(x)) for x in b]
        else:
            same = a == b
    check(same, f"metadata {key}: Switchyard {s} vs Hugging Face {v}")
check(set(sy_meta) == set(hf["metadata"]), "the same metadata keys")
for h in hf["tensors"]:
    s = next((t for t in sy_t if t["name"] == h["name"]), None)
    check(s is not None and [str(d) for d in s["dims"]] == h["dims"] and s["type"] == names[h["type"]]
          and str(s["offset"]) == h["offset"],
          f"tensor {h['name']}: dims, type and data offset as Hugging Face reads them")
    a = np.load(f"{work}/sy/{h['name']}.npy")
    b = np.load(f"{work}/ref/{h['name']}.npy")
    check(a.shape == b.shape and np.array_equal(a.view(np.uint32), b.view(np.uint32)),
          f"tensor {h['name']} ({names[h['type']]}): dequantized bit for bit "
          f"(max |diff| {np.max(np.abs(a - b)) if a.shape == b.shape else 'shape'})")
sys.exit(1 if failures else 0)
PY

# Switchyard writes; the references read.
"$py" -c "
import numpy as np
x = np.random.default_rng(3).standard_normal((4, 256)).astype(np.float32)
x[1, :32] = 0          # an all-zero block
x[2, 40] = 9.0         # an outlier
np.save('$work/x.npy', x)"
"$tool" write "$work/x.npy" "$work/mine.gguf"
node "$here/gguf/hf_gguf_dump.mjs" "$work/mine.gguf" >"$work/hf_mine.json"
"$tool" dump "$work/mine.gguf" "$work/mine"
"$py" - "$work" "$here/reference" <<'PY'
import json, sys
import numpy as np
work, refdir = sys.argv[1:]
sys.path.insert(0, refdir)
import gguf_reference as ref
failures = 0
def check(ok, what):
    global failures
    print(("ok   " if ok else "FAIL ") + what)
    failures += 0 if ok else 1
hf = json.load(open(f"{work}/hf_mine.json"))
m = hf["metadata"]
want = {"general.architecture": ("string", "llama"), "llama.block_count": ("u32", 2),
        "test.big": ("u64", str(2 ** 40 + 3)), "llama.rope.freq_base": ("f32", 10000.5),
        "test.flag": ("bool", True), "test.negative": ("i32", -7),
        "tokenizer.ggml.tokens": ("array", ["<s>", "a", "\u00e9t\u00e9", ""]),
        "tokenizer.ggml.scores": ("array", [0.0, -1.5, 2.25, 3.0]),
        "tokenizer.ggml.token_type": ("array", [3, 1, 1, 1])}
for k, (t, v) in want.items():
    check(k in m and m[k]["type"] == t and m[k]["value"] == v, f"Hugging Face reads {k} = {v!r} ({t}) from Switchyard's file: {m.get(k)}")
check(hf["version"] == 3, "version 3")
types = {"t.F32": 0, "t.BF16": 30, "t.Q8_0": 8, "t.Q4_0": 2, "t.MXFP4": 39}
r = ref.Reader(f"{work}/mine.gguf")
for t in hf["tensors"]:
    check(t["name"] in types and t["type"] == types[t["name"]] and t["dims"] == ["256", "4"]
          and int(t["offset"]) % 32 == 0, f"Hugging Face reads tensor {t['name']} as written")
x = np.load(f"{work}/x.npy")

def q8_0(x):
    out = bytearray()
    for b in x.reshape(-1, 32):
        amax = np.max(np.abs(b))
        d = np.float32(amax / np.float32(127))
        i = np.float32(1) / d if d != 0 else np.float32(0)
        v = b * i
        q = (np.sign(v) * np.floor(np.abs(v) + np.float32(0.5))).astype(np.int8)  # roundf
        out += np.float16(d).tobytes() + q.tobytes()
    return bytes(out)

def q4_0(x):
    out = bytearray()
    for b in x.reshape(-1, 32):
        j = int(np.argmax(np.abs(b)))  # the first of the largest magnitude
        d = np.float32(b[j] / np.float32(-8))
        i = np.float32(1) / d if d != 0 else np.float32(0)
        q = np.minimum(15, (b * i + np.float32(8.5)).astype(np.int8).astype(np.int32))
        out += np.float16(d).tobytes() + bytes((q[:16] | (q[16:] << 4)).astype(np.uint8))
    return bytes(out)

def mxfp4(x):  # E8M0 exponent floor(log2 amax) - 2 + 127; each value the nearest code (first)
    codes = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], np.float32)
    out = bytearray()
    for b in x.reshape(-1, 32):
        amax = np.max(np.abs(b))
        e = int(np.floor(np.log2(amax))) - 2 + 127 if amax > 0 else 0
        d = np.ldexp(np.float32(1), e - 128)  # float32: subnormal for e < 2
        q = np.argmin(np.abs(codes[None, :] * d - b[:, None]), axis=1).astype(np.uint8)
        out += bytes([e]) + bytes(q[:16] | (q[16:] << 4))
    return bytes(out)

for name, fn in (("t.Q8_0", q8_0), ("t.Q4_0", q4_0), ("t.MXFP4", mxfp4)):
    check(r.tensors[name][2] == fn(x), f"{name}: Switchyard's blocks equal the reference rounding byte for byte")
for name, (dims, tid, data) in r.tensors.items():
    a = np.load(f"{work}/mine/{name}.npy")
    b = ref.dequant(tid, data, 1024).reshape(4, 256)
    check(np.array_equal(a.view(np.uint32), b.view(np.uint32)), f"{name}: Switchyard's dequantization of its own file equals the reference")
    err = np.max(np.abs(a - x))
    bound = {"t.F32": 0, "t.BF16": 2 ** -8 * 9.0, "t.Q8_0": 9.0 / 127 / 2 * 1.01, "t.Q4_0": 9.0 / 8 * 1.01,
             "t.MXFP4": 9.0 / 2 * 1.01}[name]  # MXFP4: the top code gap, 4 d <= amax / 2
    check(err <= bound, f"{name}: max |error| vs the float32 input {err:.3g} <= {bound:.3g}")
sys.exit(1 if failures else 0)
PY
echo "test_gguf: all checks passed"
