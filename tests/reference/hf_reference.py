#!/usr/bin/python3
"""Independent PyTorch reference forward for MoE causal LMs (what Switchyard's logits are checked against).

Usage:
  /usr/bin/python3 hf_reference.py --model DIR --ids 1,2,3[;4,5,6] --out logits.npy
                                   [--f64] [--kv-cache] [--routing-out routing.json]

Reads DIR/config.json and DIR/*.safetensors (sharded via model.safetensors.index.json),
upcasts every weight to float32 (float64 with --f64) and runs the causal-LM forward.
Written from the published Hugging Face modeling code, never from Switchyard's C++.
Sources checked (huggingface/transformers, via the code-search corpus):
  models/dots1/modeling_dots1.py      (Dots1TopkRouter, Dots1MoE, Dots1Attention = Qwen3 attention)
  models/qwen2_moe/modular_qwen2_moe.py + configuration_qwen2_moe.py (router, shared expert gate, MoE-layer rule)
  models/qwen3_moe/modular_qwen3_moe.py (Qwen3Attention + Qwen2-MoE router)
  models/olmoe/modular_olmoe.py       (q_norm/k_norm over the whole projection, clip_qkv, router)
  Mixtral as summarised in /work/shared/reference/formats.md section 3.1.
  ScMoE (ScMoeForCausalLM, no published modeling code): docs/scmoe.md and the paper summary in
  /work/shared/reference/papers.md section 3; Qwen2-MoE attention and names, the routed branch
  reads a shortcut source (none|pos1|pos2|pos3) and is combined with the shared expert by
  add|cg1|cg2.

Output: float32 logits [tokens, vocab] for one sequence, [num_seqs, tokens, vocab] for several.
Sequences of unequal length are run one by one and right-padded with NaN (compare_npy.py
treats NaN in both arrays as padding). --kv-cache evaluates token by token with a KV cache
(used by selfcheck_reference.py; must agree with the full-sequence forward).
--routing-out writes the top-k expert ids per token per MoE layer (descending selection score;
for ScMoE those of the routed branch, i.e. routed on the shortcut input).
Exit status: 0 ok, 1 bad input/checkpoint, 2 unsupported architecture or feature.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_np  # noqa: E402

ARCHS = ("MixtralForCausalLM", "Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM",
         "OlmoeForCausalLM", "Dots1ForCausalLM", "ScMoeForCausalLM")
SCMOE_SHORTCUTS = ("none", "pos1", "pos2", "pos3")
SCMOE_COMBINES = ("add", "cg1", "cg2")


class Unsupported(Exception):
    """Architecture or config feature this reference does not implement (exit 2)."""


def rms_norm(x, w, eps):
    # HF LlamaRMSNorm: x * rsqrt(mean(x^2) + eps) * weight (over the last dim)
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class Config:
    """config.json with the per-architecture defaults the reference needs."""

    def __init__(self, d):
        self.d = d
        self.arch = (d.get("architectures") or ["?"])[0]
        if self.arch not in ARCHS:
            raise Unsupported(f"unknown architecture {self.arch!r}; supported: {', '.join(ARCHS)}")
        self.hidden = d["hidden_size"]
        self.num_layers = d["num_hidden_layers"]
        self.num_heads = d["num_attention_heads"]
        self.num_kv_heads = d.get("num_key_value_heads") or self.num_heads
        self.head_dim = d.get("head_dim") or self.hidden // self.num_heads
        self.eps = d.get("rms_norm_eps", 1e-6)
        self.tie = bool(d.get("tie_word_embeddings", False))
        if d.get("hidden_act", "silu") != "silu":
            raise Unsupported(f"hidden_act {d.get('hidden_act')!r} (only silu)")
        rp = d.get("rope_parameters") or {}
        self.rope_theta = float(d.get("rope_theta", rp.get("rope_theta", 10000.0)))
        scaling = d.get("rope_scaling") or rp
        rope_type = scaling.get("rope_type", scaling.get("type", "default")) if scaling else "default"
        if rope_type not in (None, "default"):
            raise Unsupported(f"rope type {rope_type!r} (only default RoPE)")
        if d.get("partial_rotary_factor", 1.0) != 1.0:
            raise Unsupported("partial_rotary_factor != 1")
        a = self.arch
        if a == "MixtralForCausalLM":
            self.num_experts, self.moe_inter = d["num_local_experts"], d["intermediate_size"]
        elif a == "Dots1ForCausalLM":
            self.num_experts, self.moe_inter = d["n_routed_experts"], d["moe_intermediate_size"]
        elif a == "ScMoeForCausalLM":
            for key in ("num_experts", "num_experts_per_tok", "moe_intermediate_size"):
                if key not in d:
                    raise ValueError(f"config.json: {key} missing (required by ScMoeForCausalLM)")
            self.num_experts, self.moe_inter = d["num_experts"], d["moe_intermediate_size"]
        else:
            self.num_experts = d.get("num_experts", 0)
            self.moe_inter = d.get("moe_intermediate_size", d.get("intermediate_size"))
        self.top_k = d["num_experts_per_tok"]
        self.norm_topk = a == "MixtralForCausalLM" or bool(d.get("norm_topk_prob", False))
        if a == "ScMoeForCausalLM":
            self.check_scmoe()

    def check_scmoe(self):
        """docs/scmoe.md: required keys, allowed values and the combinations that need a shared expert."""
        d = self.d

        def positive_int(key, value, allow_zero=False):
            if isinstance(value, bool) or not isinstance(value, int) or value < (0 if allow_zero else 1):
                raise ValueError(f"config.json: {key} = {value!r}: expected an integer >= {0 if allow_zero else 1}")
            return value
        for key in ("num_experts", "num_experts_per_tok", "moe_intermediate_size"):
            positive_int(key, d[key])
        if self.top_k > self.num_experts:
            raise ValueError(f"config.json: num_experts_per_tok {self.top_k} > num_experts {self.num_experts}")
        for key in ("norm_topk_prob", "qkv_bias"):
            if not isinstance(d.get(key, False), bool):
                raise ValueError(f"config.json: {key} = {d[key]!r}: expected true or false")
        self.shared_inter = positive_int("shared_expert_intermediate_size",
                                         d.get("shared_expert_intermediate_size", 0), allow_zero=True)
        self.sparse_step = positive_int("decoder_sparse_step", d.get("decoder_sparse_step", 2))
        only = d.get("mlp_only_layers") or []
        if not isinstance(only, list) or any(isinstance(i, bool) or not isinstance(i, int) for i in only):
            raise ValueError(f"config.json: mlp_only_layers = {only!r}: expected a list of layer indices")
        for key, allowed in (("scmoe_shortcut", SCMOE_SHORTCUTS), ("scmoe_combine", SCMOE_COMBINES)):
            if key not in d:
                raise ValueError(f"config.json: {key} missing (one of {', '.join(allowed)})")
            if d[key] not in allowed:
                raise ValueError(f"config.json: {key} = {d[key]!r}: expected one of {', '.join(allowed)}")
        self.shortcut, self.combine = d["scmoe_shortcut"], d["scmoe_combine"]
        if self.shared_inter == 0 and (self.shortcut != "none" or self.combine != "add"):
            raise ValueError(f"config.json: scmoe_shortcut {self.shortcut!r} with scmoe_combine {self.combine!r} "
                             "needs a shared expert (shared_expert_intermediate_size > 0)")
        if self.shortcut != "none" and self.num_layers > 0 and self.is_moe_layer(0):
            raise ValueError(f"config.json: scmoe_shortcut {self.shortcut!r} needs layer 0 dense (its MoE "
                             "layers read the preceding layer); set decoder_sparse_step or mlp_only_layers")
        if any(not self.is_moe_layer(i) for i in range(self.num_layers)) and "intermediate_size" not in d:
            raise ValueError("config.json: intermediate_size missing (needed by the dense layers)")

    def layer_window(self, i):
        """(sliding window or None, whether the HF rule is version-dependent) for layer i.
        HF allows key j for query q iff q - window < j <= q."""
        d, a, w = self.d, self.arch, self.d.get("sliding_window") or None
        if a == "ScMoeForCausalLM":  # docs/scmoe.md: plain causal attention
            return None, False
        if a in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM") and not d.get("use_sliding_window"):
            return None, False
        if d.get("layer_types"):
            return (w if d["layer_types"][i] == "sliding_attention" else None), False
        if a == "MixtralForCausalLM":  # v5 MixtralModel: sliding mask on every layer iff sliding_window set
            return w, False
        if a == "Dots1ForCausalLM":  # Dots1Config: sliding iff sliding_window set and i >= max_window_layers
            return (w if w is not None and i >= d.get("max_window_layers", self.num_layers) else None), False
        if a in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM") and d.get("use_sliding_window"):
            return w, True  # which layers slide differs between transformers versions
        return None, False  # OLMoE: plain causal mask

    def is_moe_layer(self, i):
        d, a = self.d, self.arch
        if a in ("MixtralForCausalLM", "OlmoeForCausalLM"):
            return True
        if a == "Dots1ForCausalLM":
            return i >= d.get("first_k_dense_replace", 0)
        if a == "ScMoeForCausalLM":  # the Qwen2-MoE rule with this family's default step 2
            return i not in (d.get("mlp_only_layers") or []) and (i + 1) % self.sparse_step == 0
        # Qwen2-MoE / Qwen3-MoE decoder-layer rule
        return (i not in (d.get("mlp_only_layers") or [])) and self.num_experts > 0 and \
            (i + 1) % d.get("decoder_sparse_step", 1) == 0


class Model:
    def __init__(self, model_dir, dtype=torch.float32):
        with open(os.path.join(model_dir, "config.json")) as f:
            self.cfg = Config(json.load(f))
        self.dtype = dtype
        self.raw = safetensors_np.read_checkpoint(model_dir)
        c = self.cfg
        self.embed = self.t("model.embed_tokens.weight")
        self.final_norm = self.t("model.norm.weight")
        if c.tie or "lm_head.weight" not in self.raw:
            if not c.tie:
                print("hf_reference: no lm_head.weight; using tied embeddings", file=sys.stderr)
            self.lm_head = self.embed
        else:
            self.lm_head = self.t("lm_head.weight")
        self.layers = [self.load_layer(i) for i in range(c.num_layers)]
        self.routing = {}  # layer -> list over forward calls of [B, T, k] id arrays

    def t(self, name, required=True):
        if name not in self.raw:
            if required:
                raise KeyError(f"tensor {name!r} missing from checkpoint")
            return None
        np_dtype = np.float64 if self.dtype == torch.float64 else np.float32
        return torch.from_numpy(np.array(self.raw[name], dtype=np_dtype))

    def load_layer(self, i):
        c, p = self.cfg, f"model.layers.{i}."
        L = {"in_norm": self.t(p + "input_layernorm.weight"),
             "post_norm": self.t(p + "post_attention_layernorm.weight")}
        scmoe = c.arch == "ScMoeForCausalLM"
        for n in ("q", "k", "v", "o"):  # biases only where the checkpoint has them
            L[n] = self.t(p + f"self_attn.{n}_proj.weight")
            if scmoe:  # docs/scmoe.md: q/k/v biases exactly when qkv_bias, never on o_proj
                has = n != "o" and c.d.get("qkv_bias", False)
                L[n + "_b"] = self.t(p + f"self_attn.{n}_proj.bias") if has else None
            else:
                L[n + "_b"] = self.t(p + f"self_attn.{n}_proj.bias", required=False)
        L["q_norm"] = self.t(p + "self_attn.q_norm.weight", required=False)
        L["k_norm"] = self.t(p + "self_attn.k_norm.weight", required=False)
        L["moe"] = c.is_moe_layer(i)
        L["window"] = c.layer_window(i)
        if not L["moe"]:
            L["mlp"] = tuple(self.t(p + f"mlp.{n}_proj.weight") for n in ("gate", "up", "down"))
            return L
        if c.arch == "MixtralForCausalLM" and p + "block_sparse_moe.gate.weight" in self.raw:
            mp, names = p + "block_sparse_moe.", ("w1", "w3", "w2")
        else:  # Qwen/OLMoE/Dots1 names; also Mixtral saved by transformers v5 (renamed to mlp.)
            mp, names = p + "mlp.", ("gate_proj", "up_proj", "down_proj")
            if c.arch == "MixtralForCausalLM" and mp + "experts.0.gate_proj.weight" not in self.raw:
                names = ("w1", "w3", "w2")
        L["router"] = self.t(mp + "gate.weight")
        L["score_bias"] = None if scmoe else \
            self.t(mp + "gate.e_score_correction_bias", required=c.arch == "Dots1ForCausalLM")
        L["experts"] = self.load_experts(mp, names)
        if c.arch == "Qwen2MoeForCausalLM":
            L["shared"] = tuple(self.t(mp + f"shared_expert.{n}_proj.weight") for n in ("gate", "up", "down"))
            L["shared_gate"] = self.t(mp + "shared_expert_gate.weight")  # [1, H]
        elif c.arch == "Dots1ForCausalLM":
            L["shared"] = tuple(self.t(mp + f"shared_experts.{n}_proj.weight") for n in ("gate", "up", "down"))
        elif scmoe:
            self.load_scmoe(L, p)
        return L

    def load_scmoe(self, L, p):
        """ScMoE layer extras (docs/scmoe.md): shared expert, cg1 / cg2 gate, shortcut RMSNorm."""
        c, H = self.cfg, self.cfg.hidden

        def shaped(name, shape):
            x = self.t(name)
            if tuple(x.shape) != shape:
                raise ValueError(f"tensor {name!r} has shape {list(x.shape)}, expected {list(shape)}")
            return x
        if c.shared_inter:
            Is, mp = c.shared_inter, p + "mlp.shared_expert."
            L["shared"] = (shaped(mp + "gate_proj.weight", (Is, H)), shaped(mp + "up_proj.weight", (Is, H)),
                           shaped(mp + "down_proj.weight", (H, Is)))
        if c.combine == "cg1":
            L["shared_gate"] = shaped(p + "mlp.shared_expert_gate.weight", (1, H))
        elif c.combine == "cg2":
            L["combine_gate"] = shaped(p + "mlp.combine_gate.weight", (2, H))  # row 0: shared, row 1: routed
        if c.shortcut != "none":
            L["shortcut_norm"] = shaped(p + "shortcut_layernorm.weight", (H,))

    def load_experts(self, mp, names):
        """List over experts of (gate [I,H], up [I,H], down [H,I]); per-expert or fused v5 tensors."""
        c = self.cfg
        if mp + "experts.gate_up_proj" in self.raw:
            gu, dn = self.t(mp + "experts.gate_up_proj"), self.t(mp + "experts.down_proj")
            H = c.hidden
            if gu.shape[1] != 2 * c.moe_inter and gu.shape[2] == 2 * c.moe_inter:
                gu = gu.transpose(1, 2)  # tolerate input-major [E, H, 2I]
            if dn.shape[1] != H and dn.shape[2] == H:
                dn = dn.transpose(1, 2)
            inter = gu.shape[1] // 2  # gate rows first, then up rows
            return [(gu[e, :inter], gu[e, inter:], dn[e]) for e in range(gu.shape[0])]
        return [tuple(self.t(mp + f"experts.{e}.{n}.weight") for n in names) for e in range(c.num_experts)]

    # ------------------------------------------------------------------ forward
    def rope(self, positions):
        hd = self.cfg.head_dim
        # HF: inv_freq = 1/(theta ** (arange(0, d, 2, int64).float() / d)), computed in float32
        inv_freq = 1.0 / (self.cfg.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.int64).to(self.dtype) / hd))
        freqs = positions.to(self.dtype)[:, None] * inv_freq[None, :]
        emb = torch.cat((freqs, freqs), dim=-1)  # [T, hd]
        return emb.cos(), emb.sin()

    def attention(self, L, x, cache, past):
        c = self.cfg
        B, T, _ = x.shape
        lin = torch.nn.functional.linear
        q, k, v = (lin(x, L[n], L[n + "_b"]) for n in ("q", "k", "v"))
        if c.arch == "OlmoeForCausalLM":  # norm over the whole projection, then optional clamp
            q, k = rms_norm(q, L["q_norm"], c.eps), rms_norm(k, L["k_norm"], c.eps)
            clip = c.d.get("clip_qkv")
            if clip is not None:
                q, k, v = (t.clamp(-clip, clip) for t in (q, k, v))
        q = q.view(B, T, -1, c.head_dim)
        k = k.view(B, T, -1, c.head_dim)
        v = v.view(B, T, -1, c.head_dim)
        if c.arch in ("Qwen3MoeForCausalLM", "Dots1ForCausalLM"):  # per-head norm before RoPE
            q, k = rms_norm(q, L["q_norm"], c.eps), rms_norm(k, L["k_norm"], c.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, heads, T, hd]
        cos, sin = self.rope(torch.arange(past, past + T))
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        if cache is not None:
            if cache.get("k") is not None:
                k = torch.cat((cache["k"], k), dim=2)
                v = torch.cat((cache["v"], v), dim=2)
            cache["k"], cache["v"] = k, v
        S = k.shape[2]
        window, ambiguous = L["window"]
        if window is not None and S > window and ambiguous:
            raise Unsupported(f"use_sliding_window with {S} > sliding_window {window} positions "
                              "(HF's layer rule differs between versions; give layer_types in config.json)")
        rep = c.num_heads // c.num_kv_heads  # GQA: kv head j serves query heads j*rep .. j*rep+rep-1
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        scores = torch.matmul(q, k.transpose(2, 3)) * c.head_dim ** -0.5  # HF: * scaling
        qpos = torch.arange(past, past + T)[:, None]
        kpos = torch.arange(S)[None, :]
        blocked = kpos > qpos
        if window is not None:
            blocked = blocked | (kpos <= qpos - window)
        scores = scores.masked_fill(blocked, float("-inf"))
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(B, T, -1)
        return torch.nn.functional.linear(out, L["o"], L["o_b"])

    def route(self, L, x):
        """x [N, H] -> (ids [N, k], weights [N, k]); routing math in float32 (float64 with --f64)."""
        c = self.cfg
        logits = x @ L["router"].t()
        if c.arch == "Dots1ForCausalLM":  # DeepSeek-V3 noaux_tc router (Dots1TopkRouter)
            s = logits.sigmoid()
            choice = s + L["score_bias"]
            n_group, topk_group = c.d.get("n_group", 1) or 1, c.d.get("topk_group", 1) or 1
            if n_group > 1:  # (with one group HF's mask keeps everything, so skipping is identical)
                N, E = choice.shape
                grouped = choice.view(N, n_group, E // n_group)
                group_scores = grouped.topk(2, dim=-1).values.sum(-1)  # sum of top-2 per group
                keep = group_scores.topk(topk_group, dim=-1).indices
                gmask = torch.zeros_like(group_scores).scatter_(1, keep, 1.0)
                emask = gmask[:, :, None].expand(N, n_group, E // n_group).reshape(N, E)
                choice = choice.masked_fill(emask == 0, 0.0)  # HF masks with 0.0, not -inf
            ids = choice.topk(c.top_k, dim=-1).indices
            w = s.gather(1, ids)  # unbiased sigmoid scores
            if c.d.get("norm_topk_prob", False):
                w = w / (w.sum(-1, keepdim=True) + 1e-20)
            return ids, w * c.d.get("routed_scaling_factor", 1.0)
        p = torch.softmax(logits, dim=-1)
        w, ids = p.topk(c.top_k, dim=-1)
        if c.norm_topk:
            w = w / w.sum(-1, keepdim=True)
        return ids, w

    @staticmethod
    def swiglu(x, gate, up, down):
        lin = torch.nn.functional.linear
        return lin(torch.nn.functional.silu(lin(x, gate)) * lin(x, up), down)

    def moe(self, L, x, layer_idx, record=True, xr=None):
        """x [B, T, H]: the post-attention-normed input. xr: ScMoE's routed-branch input (the
        normed shortcut source), None where the router and experts read x."""
        B, T, H = x.shape
        flat = x.reshape(-1, H)
        rflat = flat if xr is None else xr.reshape(-1, H)
        ids, w = self.route(L, rflat)
        if record:
            self.routing.setdefault(layer_idx, []).append(ids.view(B, T, -1).numpy().copy())
        return self.experts_out(L, flat, ids, w, rflat=rflat).view(B, T, H)

    def experts_out(self, L, flat, ids, w, keep=None, rflat=None):
        """Weighted sum of the routed experts over the pairs (ids, w) [N, k] (only where `keep`,
        if given), plus the family's shared expert. The routed experts read `rflat` when given
        (ScMoE's shortcut input), the shared expert and the gates always read `flat`."""
        rflat = flat if rflat is None else rflat
        out = torch.zeros_like(flat)
        chosen = ids if keep is None else torch.where(keep, ids, torch.full_like(ids, -1))
        for e, (gate, up, down) in enumerate(L["experts"]):  # ascending expert order, like HF index_add_
            tok, slot = torch.where(chosen == e)
            if tok.numel():
                y = self.swiglu(rflat[tok], gate, up, down) * w[tok, slot, None]
                out.index_add_(0, tok, y)
        if self.cfg.arch == "ScMoeForCausalLM":
            return self.scmoe_combine(L, flat, out)
        if self.cfg.arch == "Qwen2MoeForCausalLM":
            gate = torch.sigmoid(flat @ L["shared_gate"].t())  # [N, 1]
            out = out + gate * self.swiglu(flat, *L["shared"])
        elif self.cfg.arch == "Dots1ForCausalLM":
            out = out + self.swiglu(flat, *L["shared"])
        return out

    def scmoe_combine(self, L, flat, routed):
        """FFN_m of docs/scmoe.md from R = routed and S = SharedExpert(x_m); both gates read x_m."""
        if "shared" not in L:  # the top-k baselines: FFN_m = R
            return routed
        shared = self.swiglu(flat, *L["shared"])
        combine = self.cfg.combine
        if combine == "add":
            return routed + shared
        if combine == "cg1":
            return routed + torch.sigmoid(flat @ L["shared_gate"].t()) * shared
        coef = torch.softmax(flat @ L["combine_gate"].t(), dim=-1)  # [N, 2]: alpha (shared), beta (routed)
        return coef[:, 0:1] * shared + coef[:, 1:2] * routed

    def shortcut_input(self, L, h_in, prev):
        """ScMoE routed-branch input xr = RMSNorm(src, shortcut_layernorm) for this MoE layer, or None
        (no shortcut). h_in: this layer's input h_m; prev: (h_m-1, a_m-1) of the preceding layer."""
        if self.cfg.arch != "ScMoeForCausalLM" or self.cfg.shortcut == "none":
            return None
        src = {"pos1": h_in, "pos2": prev[1], "pos3": prev[0]}[self.cfg.shortcut]
        return rms_norm(src, L["shortcut_norm"], self.cfg.eps)

    def forward(self, ids, caches=None, past=0):
        """ids: LongTensor [B, T] -> logits [B, T, V]. caches: list of per-layer dicts (KV cache) or None."""
        c = self.cfg
        h = self.embed[ids]
        prev = None  # (h_i-1, a_i-1): ScMoE shortcut sources; per token, so the KV-cache path has them too
        for i, L in enumerate(self.layers):
            h_in = h
            a = h + self.attention(L, rms_norm(h, L["in_norm"], c.eps), None if caches is None else caches[i], past)
            x = rms_norm(a, L["post_norm"], c.eps)
            if L["moe"]:
                h = a + self.moe(L, x, i, xr=self.shortcut_input(L, h_in, prev))
            else:
                h = a + self.swiglu(x, *L["mlp"])
            prev = (h_in, a)
        return rms_norm(h, self.final_norm, c.eps) @ self.lm_head.t()

    def run(self, seqs, kv_cache=False):
        """seqs: list of equal-length id lists -> (logits [B, T, V], routing {layer: [B, T, k]})."""
        self.routing = {}
        ids = torch.tensor(seqs, dtype=torch.int64)
        with torch.no_grad():
            if not kv_cache:
                logits = self.forward(ids)
            else:
                caches = [dict() for _ in self.layers]
                logits = torch.cat([self.forward(ids[:, t:t + 1], caches, past=t) for t in range(ids.shape[1])], 1)
        routing = {i: np.concatenate(parts, axis=1) for i, parts in self.routing.items()}
        return logits, routing


def parse_ids(text):
    seqs = [[int(t) for t in s.split(",") if t.strip()] for s in text.split(";") if s.strip()]
    if not seqs or any(not s for s in seqs):
        raise ValueError(f"--ids {text!r}: expected comma-separated ids, sequences separated by ';'")
    return seqs


def evaluate(model, seqs, kv_cache=False):
    """Returns (logits ndarray [B, Tmax, V] NaN-padded, routing {layer: list per seq of [T, k]})."""
    V = model.embed.shape[0]
    for s in seqs:
        bad = [t for t in s if not 0 <= t < V]
        if bad:
            raise ValueError(f"token ids {bad} outside [0, {V})")
    lengths = {len(s) for s in seqs}
    groups = [seqs] if len(lengths) == 1 else [[s] for s in seqs]
    logits_out, routing_out = [], {}
    for g in groups:
        logits, routing = model.run(g, kv_cache)
        logits_out.extend(logits.to(torch.float64).numpy())
        for layer, r in routing.items():
            routing_out.setdefault(layer, []).extend(list(r))
    T = max(lengths)
    out = np.full((len(seqs), T, V), np.nan, dtype=np.float32)
    for b, l in enumerate(logits_out):
        out[b, :l.shape[0]] = l
    return out, routing_out


def routing_json(model, routing, seqs):
    c = model.cfg
    layers = {}
    for layer in sorted(routing):
        per_seq = [r.tolist() for r in routing[layer]]
        counts = np.bincount(np.concatenate([r.reshape(-1) for r in routing[layer]]), minlength=c.num_experts)
        layers[str(layer)] = {"ids": per_seq, "expert_counts": counts.tolist()}
    return {"architecture": c.arch, "num_experts": c.num_experts, "top_k": c.top_k,
            "order": "per token, descending selection score", "seq_lengths": [len(s) for s in seqs],
            "moe_layers": sorted(routing), "layers": layers}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json + safetensors)")
    ap.add_argument("--ids", required=True, help="token ids '1,2,3' ; several sequences '1,2;3,4'")
    ap.add_argument("--out", required=True, help="output .npy (float32 logits)")
    ap.add_argument("--f64", action="store_true", help="compute in float64 (tolerance studies)")
    ap.add_argument("--kv-cache", action="store_true", help="evaluate token by token with a KV cache")
    ap.add_argument("--routing-out", help="write top-k expert ids per token per MoE layer (JSON)")
    args = ap.parse_args(argv)
    try:
        seqs = parse_ids(args.ids)
        model = Model(args.model, torch.float64 if args.f64 else torch.float32)
        logits, routing = evaluate(model, seqs, args.kv_cache)
    except Unsupported as e:
        print(f"hf_reference: unsupported: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, OSError) as e:
        print(f"hf_reference: error: {e}", file=sys.stderr)
        return 1
    np.save(args.out, logits[0] if len(seqs) == 1 else logits)
    if args.routing_out:
        with open(args.routing_out, "w") as f:
            json.dump(routing_json(model, routing, seqs), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
