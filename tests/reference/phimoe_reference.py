#!/usr/bin/python3
"""Independent PyTorch reference forward of Phi-3.5-MoE (PhimoeForCausalLM), LongRoPE included.

Usage:
  /usr/bin/python3 phimoe_reference.py --model DIR --ids 1,2,3 [--out logits.npy] [--greedy N]
  /usr/bin/python3 phimoe_reference.py --make-variant SRC DST

Written from transformers' models/phimoe/modular_phimoe.py (sparsemixer in inference mode,
PhimoeRotaryEmbedding's short / long mscale, LayerNorm with bias, Mixtral experts, Llama
attention with biases) and modeling_rope_utils.py's _compute_longrope_parameters, never from
Switchyard's C++. Its faithfulness is checked on tests/fixtures/hf5/phimoe, whose logits
transformers wrote; that fixture has default RoPE and router_jitter_noise 0 (SparseMixer's
margin then keeps only the top expert in each softmax), so --make-variant writes one with
what it does not reach: the published config's LongRoPE (short / long factors and mscales,
here with original_max_position_embeddings 16 so that 40 positions take the long factors) and
router_jitter_noise 0.01.

RoPE as transformers computes it per forward: seq_len = the largest position + 1; above
original_max_position_embeddings every position takes the long factors and long_mscale.
--greedy N recomputes the whole prefix at each step (so the factors can switch mid-way).
"""
import json
import math
import os
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference_cli  # noqa: E402
import safetensors_np  # noqa: E402


def rope_params(cfg, hd, seq_len):
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 10000.0))
    shape = torch.arange(0, hd, 2, dtype=torch.int64).float() / hd
    kind = rp.get("rope_type", rp.get("type", "default"))
    if kind == "default":
        return 1.0 / (theta ** shape), 1.0
    assert kind == "longrope", kind
    original = rp.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))
    long = seq_len > original
    ext = torch.tensor(rp["long_factor"] if long else rp["short_factor"], dtype=torch.float32)
    inv = 1.0 / (ext * theta ** shape)
    mscale = rp.get("long_mscale" if long else "short_mscale")
    if mscale is None:
        mscale = rp.get("attention_factor")
    if mscale is None:
        factor = cfg["max_position_embeddings"] / original
        mscale = 1.0 if factor <= 1 else math.sqrt(1 + math.log(factor) / math.log(original))
    return inv, mscale


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def sparsemixer(scores, eps):
    """Inference-mode sparsemixer: top-1 and top-2 with their masked-softmax multipliers."""
    thr, ind1 = scores.max(dim=-1, keepdim=True)
    factor = scores.abs().clamp(min=thr)
    gates = scores.masked_fill(((thr - scores) / factor) > (2 * eps), float("-inf"))
    m1 = torch.softmax(gates, dim=-1).gather(-1, ind1)
    masked = torch.scatter(scores, -1, ind1, float("-inf"))
    thr2, ind2 = masked.max(dim=-1, keepdim=True)
    factor2 = scores.abs().clamp(min=thr2)
    gates2 = masked.masked_fill(((thr2 - scores) / factor2) > (2 * eps), float("-inf"))
    m2 = torch.softmax(gates2, dim=-1).gather(-1, ind2)
    return torch.cat((m1, m2), -1), torch.cat((ind1, ind2), -1)


def forward(cfg, W, ids):
    H, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim") or H // nh
    eps, E = cfg.get("rms_norm_eps", 1e-5), cfg["num_local_experts"]
    T = len(ids)
    pos = torch.arange(T)
    inv, mscale = rope_params(cfg, hd, T)
    ang = pos[:, None].float() * inv[None, :]
    emb = torch.cat((ang, ang), dim=-1)
    cos, sin = (emb.cos() * mscale)[:, None, :], (emb.sin() * mscale)[:, None, :]
    causal = pos[None, :] <= pos[:, None]
    ln = lambda x, p: torch.nn.functional.layer_norm(x, (H,), W[p + ".weight"], W[p + ".bias"], eps)
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        a = p + "self_attn."
        h = ln(x, p + "input_layernorm")
        lin = lambda n, y: y @ W[a + n + ".weight"].T + W[a + n + ".bias"]
        q = lin("q_proj", h).view(T, nh, hd)
        k = lin("k_proj", h).view(T, nkv, hd)
        v = lin("v_proj", h).view(T, nkv, hd)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        k, v = k.repeat_interleave(nh // nkv, 1), v.repeat_interleave(nh // nkv, 1)
        s = torch.einsum("qhd,khd->hqk", q, k) * hd ** -0.5
        s = s.masked_fill(~causal[None], float("-inf"))
        o = torch.einsum("hqk,khd->qhd", torch.softmax(s, -1), v).reshape(T, nh * hd)
        x = x + lin("o_proj", o)
        h = ln(x, p + "post_attention_layernorm")
        m = p + "block_sparse_moe."
        mult, sel = sparsemixer(h @ W[m + "gate.weight"].T, cfg.get("router_jitter_noise", 0.01))
        out = torch.zeros_like(h)
        for e in range(E):
            f = m + f"experts.{e}."
            y = (torch.nn.functional.silu(h @ W[f + "w1.weight"].T) * (h @ W[f + "w3.weight"].T)) @ W[
                f + "w2.weight"].T
            w = (mult * (sel == e)).sum(-1, keepdim=True)
            out = out + w * y
        x = x + out
    x = ln(x, "model.norm")
    logits = x @ W["lm_head.weight"].T
    if "lm_head.bias" in W:
        logits = logits + W["lm_head.bias"]
    return logits


def make_variant(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    cfg = json.load(open(os.path.join(dst, "config.json")))
    hd = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    rng = np.random.default_rng(5)
    cfg["router_jitter_noise"] = 0.01
    cfg["rope_parameters"] = {
        "rope_type": "longrope", "rope_theta": 10000.0,
        "short_factor": [round(float(f), 4) for f in rng.uniform(1.0, 3.0, hd // 2)],
        "long_factor": [round(float(f), 4) for f in rng.uniform(2.0, 40.0, hd // 2)],
        "short_mscale": 1.1, "long_mscale": 1.25, "original_max_position_embeddings": 16}
    cfg["original_max_position_embeddings"] = 16
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)


if __name__ == "__main__":
    reference_cli.main(__doc__, forward, make_variant)
