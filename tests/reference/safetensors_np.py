"""Minimal safetensors reader/writer in numpy (no `safetensors` package on this machine).

Purpose: let the independent PyTorch reference (hf_reference.py) and its self-check
read and write checkpoints exactly as published: u64 LE header length, JSON header,
then the data buffer. Supports F32, F16, BF16 (and F64 / integer types for reading),
and sharded checkpoints via model.safetensors.index.json.
"""
import json
import os
import struct

import numpy as np

_NP_DTYPES = {
    "F64": np.float64, "F32": np.float32, "F16": np.float16, "BF16": np.uint16,
    "I64": np.int64, "I32": np.int32, "I16": np.int16, "I8": np.int8,
    "U8": np.uint8, "U16": np.uint16, "U32": np.uint32, "U64": np.uint64, "BOOL": np.bool_,
}


def bf16_bits_to_f32(bits):
    """BF16 bit patterns (uint16) -> float32: the bf16 is the high half of an f32."""
    return (bits.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16_bits(x):
    """float32 -> BF16 bit patterns with round-to-nearest-even (as torch does)."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16)


def read_file(path):
    """Return {name: float32/float64/int ndarray} for one .safetensors file (BF16/F16 -> float32)."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ValueError(f"{path}: file shorter than the 8-byte header length")
    (header_len,) = struct.unpack("<Q", data[:8])
    if 8 + header_len > len(data):
        raise ValueError(f"{path}: header length {header_len} exceeds file size {len(data)}")
    header = json.loads(data[8:8 + header_len].decode("utf-8"))
    base = 8 + header_len
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dtype = info["dtype"]
        if dtype not in _NP_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dtype}")
        begin, end = info["data_offsets"]
        shape = tuple(info["shape"])
        arr = np.frombuffer(data, dtype=_NP_DTYPES[dtype], count=int(np.prod(shape, dtype=np.int64)),
                            offset=base + begin)
        if arr.nbytes != end - begin:
            raise ValueError(f"{path}: tensor {name}: byte size {end - begin} != shape {shape} x {dtype}")
        arr = arr.reshape(shape)
        if dtype == "BF16":
            arr = bf16_bits_to_f32(arr)
        elif dtype == "F16":
            arr = arr.astype(np.float32)
        out[name] = arr
    return out


def read_checkpoint(model_dir):
    """Read every tensor of a HF checkpoint directory (single file or sharded via index.json)."""
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(n for n in os.listdir(model_dir) if n.endswith(".safetensors"))
    if not files:
        raise FileNotFoundError(f"{model_dir}: no .safetensors files")
    tensors = {}
    for name in files:
        tensors.update(read_file(os.path.join(model_dir, name)))
    return tensors


def write_file(path, tensors, dtype="F32"):
    """Write {name: float ndarray} as a .safetensors file with all tensors stored as `dtype`
    (uint8 arrays, such as MXFP4 blocks and scales, are stored as U8 whatever `dtype` says)."""
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        a = np.asarray(tensors[name])
        stored = dtype
        if a.dtype == np.uint8:
            raw, stored = a.tobytes(), "U8"
        elif dtype == "BF16":
            raw = f32_to_bf16_bits(a).tobytes()
        elif dtype == "F16":
            raw = a.astype("<f2").tobytes()
        elif dtype == "F32":
            raw = a.astype("<f4").tobytes()
        else:
            raise ValueError(f"write_file: unsupported dtype {dtype}")
        header[name] = {"dtype": stored, "shape": list(a.shape), "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    hjson = json.dumps(header).encode("utf-8")
    hjson += b" " * ((8 - len(hjson) % 8) % 8)  # pad with spaces like the Rust writer
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for raw in blobs:
            f.write(raw)


def write_sharded(model_dir, tensors, dtype="F32", num_shards=2):
    """Write tensors into `num_shards` files plus model.safetensors.index.json."""
    names = sorted(tensors)
    weight_map = {}
    for s in range(num_shards):
        fname = f"model-{s + 1:05d}-of-{num_shards:05d}.safetensors"
        part = {n: tensors[n] for n in names[s::num_shards]}
        write_file(os.path.join(model_dir, fname), part, dtype)
        weight_map.update({n: fname for n in part})
    total = sum(int(np.asarray(t).size) for t in tensors.values()) * {"F32": 4, "F16": 2, "BF16": 2}[dtype]
    with open(os.path.join(model_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=1)
