#!/usr/bin/python3
"""GPT-OSS checkpoints with MXFP4 experts, as OpenAI publishes them (gpt-oss-20b / -120b).

Usage: /usr/bin/python3 gpt_oss_mxfp4.py SRC MXFP4_DIR DEQUANT_DIR

From SRC (a GPT-OSS checkpoint with float experts, e.g. transformers' fixture) writes
  MXFP4_DIR:   the experts as mlp.experts.{gate_up,down}_proj_{blocks,scales} (U8), the layout
               transformers' integrations/mxfp4.py reads (convert_moe_packed_tensors): blocks
               [E, out, in / 32, 16], byte j of a block holding value 2j in its low nibble and
               2j + 1 in its high one, FP4 E2M1 codes; scales [E, out, in / 32] as E8M0
               (value = fp4 * 2^(scale - 127)); out = 2I for gate_up (gate and up rows
               interleaved), H for down; config.json gains quantization_config.
  DEQUANT_DIR: the same model with those experts dequantized back to float32 in transformers'
               layout (gate_up_proj [E, H, 2I], down_proj [E, I, H]): what the MXFP4 file means.
MXFP4 blocks run along the input dimension in 32s; when SRC's intermediate_size is not a
multiple of 32 (the fixture's is 48) the experts are first padded to the next multiple with zero
gate / up rows and biases and zero down columns, which adds exactly nothing to their outputs.
Written from transformers' convert_moe_packed_tensors, never from Switchyard's C++.
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402

FP4 = np.array([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0,
                -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0], dtype=np.float32)


def quantize(w):
    """w [..., out, in] float -> (blocks [..., out, in/32, 16] u8, scales [..., out, in/32] u8)."""
    *lead, out, n = w.shape
    g = w.reshape(*lead, out, n // 32, 32).astype(np.float64)
    amax = np.abs(g).max(axis=-1)
    # The smallest power of two that brings the block's largest magnitude within E2M1's 6.
    e = np.where(amax > 0, np.ceil(np.log2(np.maximum(amax, 1e-30) / 6.0)), -127)
    e = np.clip(e, -127, 127)
    scaled = g / np.exp2(e)[..., None]
    codes = np.abs(scaled[..., None] - FP4.astype(np.float64)).argmin(axis=-1).astype(np.uint8)
    blocks = (codes[..., 0::2] | (codes[..., 1::2] << 4)).astype(np.uint8)
    return blocks, (e + 127).astype(np.uint8)


def dequantize(blocks, scales):
    """The inverse, as convert_moe_packed_tensors computes it: [..., out, in] float32."""
    lo, hi = FP4[blocks & 0x0F], FP4[blocks >> 4]
    vals = np.empty(blocks.shape[:-1] + (32,), dtype=np.float32)
    vals[..., 0::2], vals[..., 1::2] = lo, hi
    vals = vals * np.exp2(scales.astype(np.float32) - 127)[..., None]
    return vals.reshape(*blocks.shape[:-2], blocks.shape[-2] * 32)


def main():
    src, mx_dir, dq_dir = sys.argv[1:4]
    cfg = json.load(open(os.path.join(src, "config.json")))
    W = {n: np.array(a) for n, a in safetensors_np.read_checkpoint(src).items()}
    I = cfg["intermediate_size"]
    P = -(-I // 32) * 32
    if P != I:
        cfg["intermediate_size"] = P
        for name in list(W):
            a = W[name]
            if name.endswith("mlp.experts.gate_up_proj"):  # [E, H, 2I], gate / up interleaved
                W[name] = np.concatenate([a, np.zeros(a.shape[:2] + (2 * (P - I),), a.dtype)], 2)
            elif name.endswith("mlp.experts.gate_up_proj_bias"):  # [E, 2I]
                W[name] = np.concatenate([a, np.zeros((a.shape[0], 2 * (P - I)), a.dtype)], 1)
            elif name.endswith("mlp.experts.down_proj"):  # [E, I, H]
                W[name] = np.concatenate([a, np.zeros((a.shape[0], P - I, a.shape[2]), a.dtype)], 1)
    mx, dq = dict(W), dict(W)
    for name in list(W):
        for proj in ("gate_up_proj", "down_proj"):
            if not name.endswith("mlp.experts." + proj):
                continue
            w = np.swapaxes(np.asarray(W[name], dtype=np.float32), 1, 2)  # [E, out, in]
            blocks, scales = quantize(w)
            del mx[name]
            mx[name + "_blocks"], mx[name + "_scales"] = blocks, scales
            dq[name] = np.ascontiguousarray(np.swapaxes(dequantize(blocks, scales), 1, 2))
    for d, tensors, extra in ((mx_dir, mx, True), (dq_dir, dq, False)):
        if os.path.exists(d):
            shutil.rmtree(d)
        os.makedirs(d)
        c = dict(cfg)
        if extra:
            c["quantization_config"] = {"quant_method": "mxfp4",
                                        "modules_to_not_convert": ["model.layers.*.self_attn",
                                                                   "model.layers.*.mlp.router",
                                                                   "model.embed_tokens", "lm_head"]}
        json.dump(c, open(os.path.join(d, "config.json"), "w"), indent=2)
        safetensors_np.write_file(os.path.join(d, "model.safetensors"), tensors)
        for f in ("tokenizer.json", "ids.txt"):
            if os.path.exists(os.path.join(src, f)):
                shutil.copy(os.path.join(src, f), d)


if __name__ == "__main__":
    main()
