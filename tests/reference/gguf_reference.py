"""Independent GGUF reference for Switchyard's tests: a GGUF writer, a parser and
dequantization of Q8_0, Q4_0, Q4_K, Q6_K and MXFP4 written here from the format definitions
(ggml-common.h block layouts, ggml-quants.c arithmetic), with numpy only.

  gguf_reference.py write OUT.gguf        random blocks of every type (valid scales) + metadata
  gguf_reference.py dequant IN.gguf DIR   every tensor dequantized to DIR/<name>.npy (float32)
  gguf_reference.py to-hf IN.gguf DIR SRC  the model as a Hugging Face folder (F32), mapped here
"""
import struct
import sys

import numpy as np

# type id: (name, block elements, block bytes)
TYPES = {0: ("F32", 1, 4), 1: ("F16", 1, 2), 30: ("BF16", 1, 2), 8: ("Q8_0", 32, 34),
         2: ("Q4_0", 32, 18), 12: ("Q4_K", 256, 144), 14: ("Q6_K", 256, 210),
         39: ("MXFP4", 32, 17)}
ALIGN = 32


def gguf_string(s):
    b = s.encode()
    return struct.pack("<Q", len(b)) + b


def write(path):
    rng = np.random.default_rng(7)
    kv = [("general.architecture", 8, gguf_string("llama")),
          ("general.alignment", 4, struct.pack("<I", ALIGN)),
          ("test.u64", 10, struct.pack("<Q", 2 ** 40 + 3)),
          ("test.i8", 1, struct.pack("<b", -5)),
          ("test.f64", 12, struct.pack("<d", 0.1)),
          ("test.bool", 7, b"\x01"),
          ("test.strings", 9, struct.pack("<IQ", 8, 3) + b"".join(gguf_string(s) for s in ["a", "", "\u00e9t\u00e9"])),
          ("test.floats", 9, struct.pack("<IQ", 6, 2) + struct.pack("<2f", 1.5, -2.25))]
    tensors = []
    for tid, (name, block, nbytes) in TYPES.items():
        rows, cols = 3, 2 * 256
        nblocks = rows * cols // block
        raw = bytearray(rng.integers(0, 256, nblocks * nbytes, dtype=np.uint8).tobytes())
        # Keep every f16 / bf16 / f32 value finite: set each value's exponent field in range.
        half = lambda v: np.float16(v).tobytes()
        for b in range(nblocks):
            o = b * nbytes
            if name in ("Q8_0", "Q4_0"):
                raw[o:o + 2] = half(rng.uniform(-0.1, 0.1))
            elif name == "Q4_K":
                raw[o:o + 2] = half(rng.uniform(0, 0.01))
                raw[o + 2:o + 4] = half(rng.uniform(0, 0.01))
            elif name == "Q6_K":
                raw[o + 208:o + 210] = half(rng.uniform(-0.01, 0.01))
            elif name == "MXFP4":  # E8M0 scales around 1 (0 and 1 included: subnormal halves)
                raw[o] = int(rng.integers(100, 150)) if b > 1 else b
        if name == "F32":
            raw = bytearray(rng.standard_normal(rows * cols).astype("<f4").tobytes())
        elif name == "F16":
            raw = bytearray(rng.standard_normal(rows * cols).astype("<f2").tobytes())
        elif name == "BF16":
            f = rng.standard_normal(rows * cols).astype("<f4")
            raw = bytearray((f.view("<u4") >> 16).astype("<u2").tobytes())
        tensors.append((f"t.{name.lower()}", [cols, rows], tid, bytes(raw)))
    out = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv)))
    for key, vt, val in kv:
        out += gguf_string(key) + struct.pack("<I", vt) + val
    offset = 0
    for name, dims, tid, data in tensors:
        out += gguf_string(name) + struct.pack("<I", len(dims)) + struct.pack(f"<{len(dims)}q", *dims)
        out += struct.pack("<IQ", tid, offset)
        offset += (len(data) + ALIGN - 1) // ALIGN * ALIGN
    out += b"\0" * (-len(out) % ALIGN)
    for _, _, _, data in tensors:
        out += data + b"\0" * (-len(data) % ALIGN)
    open(path, "wb").write(out)


class Reader:
    def __init__(self, path):
        self.b = open(path, "rb").read()
        self.p = 0
        assert self.take(4) == b"GGUF"
        version, n_t, n_kv = self.unpack("<IQQ")
        assert version == 3
        self.meta = {}
        for _ in range(n_kv):
            key = self.string()
            (vt,) = self.unpack("<I")
            self.meta[key] = self.value(vt)
        align = self.meta.get("general.alignment", 32)
        infos = []
        for _ in range(n_t):
            name = self.string()
            (nd,) = self.unpack("<I")
            dims = list(self.unpack(f"<{nd}q"))
            tid, off = self.unpack("<IQ")
            infos.append((name, dims, tid, off))
        start = (self.p + align - 1) // align * align
        self.tensors = {}
        for name, dims, tid, off in infos:
            _, block, nbytes = TYPES[tid]
            n = int(np.prod(dims))
            data = self.b[start + off:start + off + n // block * nbytes]
            self.tensors[name] = (dims, tid, data)

    def take(self, n):
        s = self.b[self.p:self.p + n]
        self.p += n
        return s

    def unpack(self, fmt):
        v = struct.unpack_from(fmt, self.b, self.p)
        self.p += struct.calcsize(fmt)
        return v

    def string(self):
        (n,) = self.unpack("<Q")
        return self.take(n).decode()

    def value(self, vt):
        fmts = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
        if vt == 8:
            return self.string()
        if vt == 9:
            et, n = self.unpack("<IQ")
            return [self.value(et) for _ in range(n)]
        return self.unpack(fmts[vt])[0]


def f16(b):
    return np.frombuffer(b, dtype="<f2").astype(np.float32)


def dequant(tid, data, n):
    name, block, nbytes = TYPES[tid]
    if name == "F32":
        return np.frombuffer(data, dtype="<f4").copy()
    if name == "F16":
        return f16(data)
    if name == "BF16":
        return (np.frombuffer(data, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
    blocks = np.frombuffer(data, dtype=np.uint8).reshape(-1, nbytes)
    if name == "Q8_0":
        d = f16(blocks[:, :2].tobytes())[:, None]
        q = blocks[:, 2:].view(np.int8).astype(np.float32)
        return (q * d).astype(np.float32).ravel()
    if name == "Q4_0":
        d = f16(blocks[:, :2].tobytes())[:, None]
        qs = blocks[:, 2:]
        q = np.concatenate([(qs & 0xF).astype(np.int32) - 8, (qs >> 4).astype(np.int32) - 8], axis=1)
        return (q.astype(np.float32) * d).astype(np.float32).ravel()
    if name == "MXFP4":
        kv = np.array([0, 1, 2, 3, 4, 6, 8, 12, 0, -1, -2, -3, -4, -6, -8, -12], dtype=np.float32)
        e = blocks[:, 0].astype(np.float64)
        d = (2.0 ** (e - 128)).astype(np.float32)[:, None]  # exact in float32 for every e
        qs = blocks[:, 1:]
        q = np.concatenate([kv[qs & 0xF], kv[qs >> 4]], axis=1)
        return (q * d).astype(np.float32).ravel()
    out = np.empty((blocks.shape[0], 256), dtype=np.float32)
    if name == "Q4_K":
        d = f16(blocks[:, 0:2].tobytes())
        dmin = f16(blocks[:, 2:4].tobytes())
        sc_bytes = blocks[:, 4:16].astype(np.int32)
        qs = blocks[:, 16:144]
        for j in range(8):  # the 6-bit scale and min of sub-block j
            if j < 4:
                sc = sc_bytes[:, j] & 63
                m = sc_bytes[:, j + 4] & 63
            else:
                sc = (sc_bytes[:, j + 4] & 0xF) | ((sc_bytes[:, j - 4] >> 6) << 4)
                m = (sc_bytes[:, j + 4] >> 4) | ((sc_bytes[:, j] >> 6) << 4)
            d1 = (d * sc.astype(np.float32)).astype(np.float32)
            m1 = (dmin * m.astype(np.float32)).astype(np.float32)
            q = qs[:, (j // 2) * 32:(j // 2) * 32 + 32]
            q = (q & 0xF) if j % 2 == 0 else (q >> 4)
            out[:, j * 32:(j + 1) * 32] = d1[:, None] * q.astype(np.float32) - m1[:, None]
        return out.ravel()
    if name == "Q6_K":
        ql = blocks[:, 0:128].astype(np.int32)
        qh = blocks[:, 128:192].astype(np.int32)
        sc = blocks[:, 192:208].view(np.int8).astype(np.float32)
        d = f16(blocks[:, 208:210].tobytes())
        for half in range(2):  # 128 values each: ql 64 bytes, qh 32 bytes, 8 scales
            L, H, S = ql[:, 64 * half:64 * half + 64], qh[:, 32 * half:32 * half + 32], sc[:, 8 * half:8 * half + 8]
            for l in range(32):
                iss = l // 16
                q1 = ((L[:, l] & 0xF) | (((H[:, l] >> 0) & 3) << 4)) - 32
                q2 = ((L[:, l + 32] & 0xF) | (((H[:, l] >> 2) & 3) << 4)) - 32
                q3 = ((L[:, l] >> 4) | (((H[:, l] >> 4) & 3) << 4)) - 32
                q4 = ((L[:, l + 32] >> 4) | (((H[:, l] >> 6) & 3) << 4)) - 32
                base = 128 * half
                for off, s, q in ((0, 0, q1), (32, 2, q2), (64, 4, q3), (96, 6, q4)):
                    out[:, base + l + off] = (d * S[:, iss + s]).astype(np.float32) * q.astype(np.float32)
        return out.ravel()
    raise ValueError(name)


def to_hf(gguf_path, out_dir, config_dir):
    """A GGUF model as a Hugging Face folder (F32 safetensors), mapped from formats.md
    independently of Switchyard: names per family, stacked experts split, the llama converter's
    q / k row permutation undone. config.json and tokenizer.json come from config_dir."""
    import json, os, re, shutil
    r = Reader(gguf_path)
    arch = r.meta["general.architecture"]
    cfg = json.load(open(os.path.join(config_dir, "config.json")))
    mixtral = arch == "llama"
    moe = "block_sparse_moe." if mixtral else "mlp."
    names = ("w1", "w3", "w2") if mixtral else ("gate_proj", "up_proj", "down_proj")
    heads, kv_heads = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    out = {}
    def arr(name):
        dims, tid, data = r.tensors[name]
        return dequant(tid, data, int(np.prod(dims))).reshape(dims[::-1])
    def unpermute(w, n_head):  # inverse of W.reshape(n, 2, rows/n/2, in).swapaxes(1, 2)
        rows, cols = w.shape
        return w.reshape(n_head, rows // n_head // 2, 2, cols).swapaxes(1, 2).reshape(rows, cols)
    simple = {"attn_norm.weight": "input_layernorm.weight", "ffn_norm.weight": "post_attention_layernorm.weight",
              "attn_v.weight": "self_attn.v_proj.weight", "attn_output.weight": "self_attn.o_proj.weight",
              "attn_q.bias": "self_attn.q_proj.bias", "attn_k.bias": "self_attn.k_proj.bias",
              "attn_v.bias": "self_attn.v_proj.bias", "attn_q_norm.weight": "self_attn.q_norm.weight",
              "attn_k_norm.weight": "self_attn.k_norm.weight", "ffn_gate_inp.weight": moe + "gate.weight",
              "ffn_gate_shexp.weight": "mlp.shared_expert.gate_proj.weight",
              "ffn_up_shexp.weight": "mlp.shared_expert.up_proj.weight",
              "ffn_down_shexp.weight": "mlp.shared_expert.down_proj.weight"}
    for name in r.tensors:
        if name == "token_embd.weight":
            out["model.embed_tokens.weight"] = arr(name)
        elif name == "output_norm.weight":
            out["model.norm.weight"] = arr(name)
        elif name == "output.weight":
            out["lm_head.weight"] = arr(name)
        else:
            m = re.fullmatch(r"blk\.(\d+)\.(.+)", name)
            l, rest = int(m.group(1)), m.group(2)
            p = f"model.layers.{l}."
            if rest in simple:
                out[p + simple[rest]] = arr(name)
            elif rest in ("attn_q.weight", "attn_k.weight"):
                w = arr(name)
                if mixtral:
                    w = unpermute(w, heads if rest[5] == "q" else kv_heads)
                out[p + f"self_attn.{rest[5]}_proj.weight"] = w
            elif rest == "ffn_gate_inp_shexp.weight":
                out[p + "mlp.shared_expert_gate.weight"] = arr(name).reshape(1, -1)
            elif rest in ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"):
                w = arr(name)  # [E, out, in]
                which = {"gate": 0, "up": 1, "down": 2}[rest.split("_")[1]]
                for e in range(w.shape[0]):
                    out[p + f"{moe}experts.{e}.{names[which]}.weight"] = w[e]
            else:
                raise SystemExit(f"unmapped GGUF tensor {name}")
    os.makedirs(out_dir, exist_ok=True)
    header, blobs, offset = {}, [], 0
    for name, w in out.items():
        b = np.ascontiguousarray(w, dtype="<f4").tobytes()
        header[name] = {"dtype": "F32", "shape": list(w.shape), "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header).encode()
    h += b" " * (-len(h) % 8)
    with open(os.path.join(out_dir, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    cfg["torch_dtype"] = "float32"
    json.dump(cfg, open(os.path.join(out_dir, "config.json"), "w"))
    if os.path.exists(os.path.join(config_dir, "tokenizer.json")):
        shutil.copy(os.path.join(config_dir, "tokenizer.json"), out_dir)


def main():
    if sys.argv[1] == "write":
        write(sys.argv[2])
    elif sys.argv[1] == "dequant":
        r = Reader(sys.argv[2])
        for name, (dims, tid, data) in r.tensors.items():
            np.save(f"{sys.argv[3]}/{name}.npy", dequant(tid, data, int(np.prod(dims))).reshape(dims[::-1]))
    elif sys.argv[1] == "to-hf":
        to_hf(sys.argv[2], sys.argv[3], sys.argv[4])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
