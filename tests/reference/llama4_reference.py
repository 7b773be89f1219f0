#!/usr/bin/python3
"""Independent PyTorch reference forward of Llama 4 text models (Llama4ForCausalLM).

Usage:
  /usr/bin/python3 llama4_reference.py --model DIR --ids 1,2,3 --out logits.npy [--greedy N]
  /usr/bin/python3 llama4_reference.py --make-variant SRC DST

Written from transformers' models/llama4/modeling_llama4.py and configuration_llama4.py
(Llama4TextAttention, Llama4Router, Llama4TextMoe, Llama4TextExperts, Llama4TextL2Norm,
create_chunked_causal_mask; _compute_llama3_parameters in modeling_rope_utils.py), never from
Switchyard's C++. It covers what the transformers fixture (tests/fixtures/hf5/llama4_text) does
not: NoPE layers with attention temperature tuning, dense layers (intermediate_size_mlp) between
MoE ones, top-2 routing and llama3 RoPE scaling. Its faithfulness is checked on the fixture
itself, whose logits transformers wrote (test_llama4_variants.sh).

--greedy N prints the prompt followed by N greedy ids (recomputing the whole prefix each step).
--make-variant writes DST: SRC's checkpoint with a config that turns those features on, layer 1
made dense (new random feed_forward.{gate,up,down}_proj of intermediate_size_mlp) and
rope_parameters of type llama3.
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


def rms(x, eps, w=None):
    y = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
    return y if w is None else y * w


def inv_freq(cfg, hd):
    rp = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    theta = rp.get("rope_theta", cfg.get("rope_theta", 500000.0))
    f = 1.0 / (theta ** (torch.arange(0, hd, 2, dtype=torch.int64).float() / hd))
    if rp.get("rope_type", rp.get("type", "default")) != "llama3":
        return f
    factor, lo, hi = rp["factor"], rp.get("low_freq_factor", 1), rp.get("high_freq_factor", 4)
    old = rp["original_max_position_embeddings"]
    lo_wl, hi_wl = old / lo, old / hi
    wl = 2 * math.pi / f
    scaled = torch.where(wl > lo_wl, f / factor, f)
    smooth = (old / wl - lo) / (hi - lo)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wl < hi_wl) * ~(wl > lo_wl)
    return torch.where(medium, smoothed, scaled)


def rope_interleaved(x, cos, sin):  # x [T, heads, hd]; pairs (2i, 2i + 1) as complex numbers
    a, b = x[..., 0::2], x[..., 1::2]
    c, s = cos[:, None, :], sin[:, None, :]
    out = torch.empty_like(x)
    out[..., 0::2] = a * c - b * s
    out[..., 1::2] = a * s + b * c
    return out


def forward(cfg, W, ids):
    H, nh, nkv = cfg["hidden_size"], cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = cfg.get("head_dim") or H // nh
    L, eps = cfg["num_hidden_layers"], cfg.get("rms_norm_eps", 1e-5)
    E, K = cfg["num_local_experts"], cfg.get("num_experts_per_tok", 1)
    step = cfg.get("interleave_moe_layer_step", 1)
    moe_layers = cfg.get("moe_layers")
    if moe_layers is None:
        moe_layers = list(range(step - 1, L, step))
    interval = cfg.get("no_rope_layer_interval", 4)
    use_rope = cfg.get("no_rope_layers") or [int((l + 1) % interval != 0) for l in range(L)]
    types = cfg.get("layer_types") or ["chunked_attention" if r else "full_attention" for r in use_rope]
    chunk = cfg.get("attention_chunk_size", 8192)
    T = len(ids)
    pos = torch.arange(T)
    ang = pos[:, None].float() * inv_freq(cfg, hd)[None, :]
    cos, sin = torch.cos(ang), torch.sin(ang)
    causal = pos[None, :] <= pos[:, None]
    chunked = causal & ((pos[None, :] // chunk) == (pos[:, None] // chunk))
    x = W["model.embed_tokens.weight"][torch.tensor(ids)]
    for l in range(L):
        p = f"model.layers.{l}."
        h = rms(x, eps, W[p + "input_layernorm.weight"])
        q = (h @ W[p + "self_attn.q_proj.weight"].T).view(T, nh, hd)
        k = (h @ W[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd)
        v = (h @ W[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd)
        if use_rope[l]:
            q, k = rope_interleaved(q, cos, sin), rope_interleaved(k, cos, sin)
            if cfg.get("use_qk_norm", True):
                q, k = rms(q, eps), rms(k, eps)
        elif cfg.get("attn_temperature_tuning", True):
            scale = torch.log(torch.floor((pos.float() + 1.0) / cfg.get("floor_scale", 8192)) + 1.0)
            q = q * (scale * cfg.get("attn_scale", 0.1) + 1.0)[:, None, None]
        k = k.repeat_interleave(nh // nkv, dim=1)
        v = v.repeat_interleave(nh // nkv, dim=1)
        s = torch.einsum("qhd,khd->hqk", q, k) * hd ** -0.5
        mask = chunked if types[l] == "chunked_attention" else causal
        s = s.masked_fill(~mask[None], float("-inf"))
        o = torch.einsum("hqk,khd->qhd", torch.softmax(s, dim=-1), v).reshape(T, nh * hd)
        x = x + o @ W[p + "self_attn.o_proj.weight"].T
        h = rms(x, eps, W[p + "post_attention_layernorm.weight"])
        f = p + "feed_forward."

        def mlp(prefix, y):
            g = y @ W[prefix + "gate_proj.weight"].T
            return (torch.nn.functional.silu(g) * (y @ W[prefix + "up_proj.weight"].T)) @ W[
                prefix + "down_proj.weight"].T

        if l in moe_layers:
            logits = h @ W[f + "router.weight"].T
            top, idx = torch.topk(logits, K, dim=1)
            scores = torch.sigmoid(torch.full_like(logits, float("-inf")).scatter(1, idx, top))
            out = mlp(f + "shared_expert.", h)
            gu, dn = W[f + "experts.gate_up_proj"], W[f + "experts.down_proj"]
            for e in range(E):
                xin = h * scores[:, e:e + 1]  # the weight scales the expert's input
                g, u = (xin @ gu[e]).chunk(2, dim=-1)
                out = out + (u * torch.nn.functional.silu(g)) @ dn[e]
        else:
            out = mlp(f, h)
        x = x + out
    x = rms(x, eps, W["model.norm.weight"])
    return x @ W["lm_head.weight"].T


def make_variant(src, dst):
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(src, dst)
    cfg = json.load(open(os.path.join(dst, "config.json")))
    L = cfg["num_hidden_layers"]
    cfg["no_rope_layers"] = [1 if l != 1 else 0 for l in range(L)]  # layer 1: NoPE
    cfg["layer_types"] = ["chunked_attention" if l != 1 else "full_attention" for l in range(L)]
    cfg["attention_chunk_size"] = 8
    cfg["floor_scale"] = 4  # the temperature changes every 4 positions
    cfg["attn_scale"] = 0.5
    cfg["num_experts_per_tok"] = 2
    cfg["moe_layers"] = [l for l in range(L) if l != 1]  # layer 1 dense
    cfg["rope_parameters"] = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                              "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                              "original_max_position_embeddings": 64}
    json.dump(cfg, open(os.path.join(dst, "config.json"), "w"), indent=2)
    W = safetensors_np.read_checkpoint(dst)
    W = {n: a for n, a in W.items() if not n.startswith("model.layers.1.feed_forward.")}
    rng = np.random.default_rng(4)
    H, I = cfg["hidden_size"], cfg["intermediate_size_mlp"]
    f = "model.layers.1.feed_forward."
    W[f + "gate_proj.weight"] = rng.normal(0, 0.05, (I, H)).astype(np.float32)
    W[f + "up_proj.weight"] = rng.normal(0, 0.05, (I, H)).astype(np.float32)
    W[f + "down_proj.weight"] = rng.normal(0, 0.05, (H, I)).astype(np.float32)
    for n in os.listdir(dst):
        if n.endswith(".safetensors"):
            os.remove(os.path.join(dst, n))
    safetensors_np.write_file(os.path.join(dst, "model.safetensors"), W)


if __name__ == "__main__":
    reference_cli.main(__doc__, forward, make_variant)
