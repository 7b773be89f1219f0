#!/usr/bin/python3
"""Self-check of the ScMoE family (ScMoeForCausalLM, docs/scmoe.md) in hf_reference.py and
train_reference.py; it does not touch Switchyard.

Writes tiny random ScMoE checkpoints (hidden 32, 4 layers with MoE at layers 1 and 3, 4 heads /
2 KV heads, 8 experts, top-1 and top-2, shared width 48, expert width 24, vocab 64) and checks:
  a. shortcut none + add == an independent numpy forward written here from docs/scmoe.md (a
     Qwen2-MoE-like block without the shared-expert gate); none + cg1 == the same weights saved
     as Qwen2MoeForCausalLM (zero q/k/v biases); every shortcut / combine variant == the numpy
     forward (the plain top-k baseline without a shared expert and norm_topk_prob included);
  b. pos1 / pos2 / pos3 / none give pairwise different logits; the routed ids recorded
     (--routing-out data) for a pos2 layer m == top-k of softmax(RMSNorm(a_m-1) Wg^T) by hand,
     and likewise h_m for pos1 and h_m-1 for pos3;
  c. cg2 with equal combine_gate rows == alpha = beta = 0.5, i.e. add with every down_proj of the
     layer halved; cg1 with a zero gate == add with the shared down_proj halved;
  d. KV-cache forward == full forward for pos2 + cg1 (float32 max abs diff < 1e-5; float64);
  e. train_reference.py: the CLI runs --steps 2 on pos2 + cg1 (top-1) and pos3 + cg2 (top-2), its
     step-0 logits equal hf_reference's, its expert counts are the routed branch's; float64
     gradients == central finite differences (relative error < 1e-5) on shortcut_layernorm,
     shared_expert_gate / combine_gate, an earlier layer's attention, the router, experts and the
     shared expert, dropless and with a capacity limit; the gradient of that earlier attention
     weight really flows through the shortcut (detaching the shortcut source changes it); a
     capacity limit drops routed pairs only (MoE-layer output re-derived in numpy) and the router
     losses use the shortcut input's router logits;
  f. config errors (missing num_experts, missing / unknown scmoe_shortcut or scmoe_combine, a
     shortcut or gate without a shared expert, a shortcut on MoE layer 0) and a missing
     shortcut_layernorm tensor are rejected naming the key / tensor; the CLI exits 1.
Run: /usr/bin/python3 tests/reference/scmoe_reference_checks.py   (exit 0 on success)
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import hf_reference as hf  # noqa: E402
import safetensors_np  # noqa: E402
import train_reference as tr  # noqa: E402
from selfcheck_reference import FAILURES, check, rnd  # noqa: E402  (the shared check helpers)

V, H, NL, NH, NKV = 64, 32, 4, 4, 2
E, I_EXP, I_SH, I_DENSE = 8, 24, 48, 40
HD = H // NH
EPS, THETA = 1e-5, 10000.0
MOE_LAYERS = (1, 3)  # decoder_sparse_step 2
SEQS = [[1, 5, 9, 2, 63, 30, 4, 17, 8], [3, 3, 7, 60, 12, 45, 0, 21, 50]]


# ---------------------------------------------------------------------- checkpoints
def swiglu_tensors(rng, prefix, inter):
    return {prefix + "gate_proj.weight": rnd(rng, inter, H), prefix + "up_proj.weight": rnd(rng, inter, H),
            prefix + "down_proj.weight": rnd(rng, H, inter)}


def build_all(seed):
    """Every tensor any variant may use (so that variants share weights); select() keeps a variant's."""
    rng = np.random.default_rng(seed)
    t = {"model.embed_tokens.weight": rnd(rng, V, H, std=1.0), "model.norm.weight": 1 + rnd(rng, H, std=0.1),
         "lm_head.weight": rnd(rng, V, H)}
    for i in range(NL):
        p = f"model.layers.{i}."
        t.update({p + "self_attn.q_proj.weight": rnd(rng, NH * HD, H),
                  p + "self_attn.k_proj.weight": rnd(rng, NKV * HD, H),
                  p + "self_attn.v_proj.weight": rnd(rng, NKV * HD, H),
                  p + "self_attn.o_proj.weight": rnd(rng, H, NH * HD),
                  p + "input_layernorm.weight": 1 + rnd(rng, H, std=0.1),
                  p + "post_attention_layernorm.weight": 1 + rnd(rng, H, std=0.1)})
        if i not in MOE_LAYERS:
            t.update(swiglu_tensors(rng, p + "mlp.", I_DENSE))
            continue
        t[p + "mlp.gate.weight"] = rnd(rng, E, H, std=0.5)
        for e in range(E):
            t.update(swiglu_tensors(rng, f"{p}mlp.experts.{e}.", I_EXP))
        t.update(swiglu_tensors(rng, p + "mlp.shared_expert.", I_SH))
        t[p + "mlp.shared_expert_gate.weight"] = rnd(rng, 1, H, std=0.5)
        t[p + "mlp.combine_gate.weight"] = rnd(rng, 2, H, std=0.5)
        t[p + "shortcut_layernorm.weight"] = 1 + rnd(rng, H, std=0.3)
    return t


def config(shortcut, combine, top_k=2, shared=I_SH, norm_topk=False):
    return {"architectures": ["ScMoeForCausalLM"], "model_type": "scmoe", "vocab_size": V, "hidden_size": H,
            "num_hidden_layers": NL, "num_attention_heads": NH, "num_key_value_heads": NKV, "head_dim": HD,
            "rms_norm_eps": EPS, "rope_theta": THETA, "max_position_embeddings": 64, "tie_word_embeddings": False,
            "bos_token_id": 1, "eos_token_id": 2, "num_experts": E, "num_experts_per_tok": top_k,
            "moe_intermediate_size": I_EXP, "norm_topk_prob": norm_topk, "shared_expert_intermediate_size": shared,
            "intermediate_size": I_DENSE, "scmoe_shortcut": shortcut, "scmoe_combine": combine}


def select(t, cfg):
    """The tensors docs/scmoe.md names for this config (no extras: unused tensors would get zero grads)."""
    out = {}
    for n, x in t.items():
        if n.endswith("shortcut_layernorm.weight") and cfg["scmoe_shortcut"] == "none":
            continue
        if n.endswith("shared_expert_gate.weight") and cfg["scmoe_combine"] != "cg1":
            continue
        if n.endswith("combine_gate.weight") and cfg["scmoe_combine"] != "cg2":
            continue
        if ".shared_expert." in n and not cfg["shared_expert_intermediate_size"]:
            continue
        out[n] = x
    return out


def save(root, name, cfg, t):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    safetensors_np.write_file(os.path.join(d, "model.safetensors"), t, "F32")
    return d


# ---------------------------------------------------------------------- independent numpy forward
def np_rms(x, w):
    return x / np.sqrt((x * x).mean(-1, keepdims=True) + EPS) * w


def np_softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def np_swiglu(x, g, u, d):
    a = x @ g.T
    return (a / (1 + np.exp(-a)) * (x @ u.T)) @ d.T


def np_topk(p, k):
    """Top-k ids per row, descending (ties to the lower id)."""
    return np.argsort(-p, axis=-1, kind="stable")[:, :k]


def np_attention(t, p, x):
    """Causal GQA attention with rotate-half RoPE over one sequence x [T, H] (already normed)."""
    T = x.shape[0]
    W = lambda n: t[p + f"self_attn.{n}_proj.weight"].astype(np.float64)
    q, k, v = (x @ W(n).T for n in ("q", "k", "v"))
    q, k, v = q.reshape(T, NH, HD), k.reshape(T, NKV, HD), v.reshape(T, NKV, HD)
    ang = np.arange(T)[:, None] * THETA ** (-np.arange(0, HD, 2) / HD)[None, :]  # [T, HD/2]
    cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]

    def rope(z):  # pairs (j, j + HD/2) rotated by the position's angle j
        z1, z2 = z[..., :HD // 2], z[..., HD // 2:]
        return np.concatenate([z1 * cos - z2 * sin, z2 * cos + z1 * sin], -1)
    q, k = rope(q), rope(k)
    out = np.zeros((T, NH, HD))
    causal = np.triu(np.ones((T, T), dtype=bool), 1)
    for head in range(NH):
        kv = head // (NH // NKV)
        s = q[:, head] @ k[:, kv].T / np.sqrt(HD)
        s[causal] = -np.inf
        out[:, head] = np_softmax(s) @ v[:, kv]
    return out.reshape(T, NH * HD) @ W("o").T


def np_forward(cfg, t, seq):
    """docs/scmoe.md's block, per sequence -> (logits [T, V], per-layer {h, a, x}, routed ids {m: [T, k]})."""
    f = {n: x.astype(np.float64) for n, x in t.items()}
    k, shortcut, combine = cfg["num_experts_per_tok"], cfg["scmoe_shortcut"], cfg["scmoe_combine"]
    h = f["model.embed_tokens.weight"][seq]
    inter, routed_ids = [], {}
    for i in range(NL):
        p = f"model.layers.{i}."
        a = h + np_attention(f, p, np_rms(h, f[p + "input_layernorm.weight"]))
        x = np_rms(a, f[p + "post_attention_layernorm.weight"])
        inter.append({"h": h, "a": a, "x": x})
        if i not in MOE_LAYERS:
            h = a + np_swiglu(x, *(f[p + f"mlp.{n}_proj.weight"] for n in ("gate", "up", "down")))
            continue
        src = {"none": None, "pos1": h, "pos2": inter[i - 1]["a"], "pos3": inter[i - 1]["h"]}[shortcut]
        xr = x if src is None else np_rms(src, f[p + "shortcut_layernorm.weight"])
        prob = np_softmax(xr @ f[p + "mlp.gate.weight"].T)
        ids = np_topk(prob, k)
        w = np.take_along_axis(prob, ids, -1)
        if cfg.get("norm_topk_prob"):
            w = w / w.sum(-1, keepdims=True)
        routed_ids[i] = ids
        R = np.zeros_like(x)
        for tok in range(x.shape[0]):
            for j in range(k):
                e = ids[tok, j]
                R[tok] += w[tok, j] * np_swiglu(xr[tok], *(f[f"{p}mlp.experts.{e}.{n}_proj.weight"]
                                                          for n in ("gate", "up", "down")))
        if not cfg["shared_expert_intermediate_size"]:
            ffn = R
        else:
            S = np_swiglu(x, *(f[p + f"mlp.shared_expert.{n}_proj.weight"] for n in ("gate", "up", "down")))
            if combine == "add":
                ffn = S + R
            elif combine == "cg1":
                ffn = S / (1 + np.exp(-(x @ f[p + "mlp.shared_expert_gate.weight"].T))) + R
            else:
                ab = np_softmax(x @ f[p + "mlp.combine_gate.weight"].T)
                ffn = ab[:, :1] * S + ab[:, 1:] * R
        h = a + ffn
    logits = np_rms(h, f["model.norm.weight"]) @ f["lm_head.weight"].T
    return logits, inter, routed_ids


def hf_eval(d, dtype=torch.float64, kv=False, seqs=SEQS):
    """(logits [B, T, V] in the model's dtype, routing {layer: [B, T, k]}) for equal-length seqs
    (Model.run, not evaluate(), which rounds the logits to float32)."""
    logits, routing = hf.Model(d, dtype).run(seqs, kv)
    return logits.numpy(), routing


def maxabs(a, b):
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


# ---------------------------------------------------------------------- a, b, c, d: the forward
def check_forward(root, t):
    logits, np_out = {}, {}
    variants = [("none", "add", 2, I_SH, False), ("none", "cg1", 2, I_SH, False), ("none", "add", 2, 0, False),
                ("pos1", "cg1", 1, I_SH, False), ("pos2", "cg1", 1, I_SH, False), ("pos3", "cg1", 1, I_SH, False),
                ("pos2", "add", 2, I_SH, True), ("pos2", "cg2", 2, I_SH, False), ("pos3", "cg2", 2, I_SH, False)]
    for sc, cb, k, sh, nt in variants:
        name = f"{sc}_{cb}_top{k}" + ("_noshared" if not sh else "") + ("_norm" if nt else "")
        cfg = config(sc, cb, k, sh, nt)
        d = save(root, name, cfg, select(t, cfg))
        got, routing = hf_eval(d)
        ref = [np_forward(cfg, select(t, cfg), s) for s in SEQS]
        err = maxabs(got, np.stack([r[0] for r in ref]))
        same_ids = all(np.array_equal(routing[m][b], ref[b][2][m]) for m in MOE_LAYERS for b in range(len(SEQS)))
        check(err < 1e-10 and same_ids, f"[a] {name}: logits == independent numpy forward (max abs {err:.1e}), "
              f"routed ids equal")
        logits[name], np_out[name] = got, (cfg, ref, routing)

    # a. none + cg1 == the same weights as Qwen2MoeForCausalLM (zero q/k/v biases, step 2, dense intermediate_size)
    q2 = dict(select(t, config("none", "cg1")))
    for i in range(NL):
        for n, rows in (("q", NH * HD), ("k", NKV * HD), ("v", NKV * HD)):
            q2[f"model.layers.{i}.self_attn.{n}_proj.bias"] = np.zeros(rows, np.float32)
    qcfg = {kk: v for kk, v in config("none", "cg1").items() if not kk.startswith("scmoe_")}
    qcfg.update(architectures=["Qwen2MoeForCausalLM"], model_type="qwen2_moe", decoder_sparse_step=2,
                mlp_only_layers=[], qkv_bias=True)
    qd = save(root, "qwen2moe_same", qcfg, q2)
    qwen, qrouting = hf_eval(qd)
    err = maxabs(qwen, logits["none_cg1_top2"])
    check(err < 1e-12, f"[a] none + cg1 == Qwen2MoeForCausalLM with the same weights (max abs {err:.1e})")
    qwen32, _ = hf_eval(qd, torch.float32)
    sc32, _ = hf_eval(os.path.join(root, "none_cg1_top2"), torch.float32)
    check(maxabs(qwen32, sc32) < 1e-5, f"[a] ... also in float32 (max abs {maxabs(qwen32, sc32):.1e})")

    # b. the shortcut positions really differ; the recorded routed ids are the shortcut source's top-k
    names = ["none_cg1_top2", "pos1_cg1_top1", "pos2_cg1_top1", "pos3_cg1_top1"]
    diffs = {(x, y): maxabs(logits[x], logits[y]) for i, x in enumerate(names[1:], 1) for y in names[:i]}
    check(min(diffs.values()) > 1e-3, "[b] pos1 / pos2 / pos3 / none logits pairwise different (min max-abs "
          f"diff {min(diffs.values()):.2e})")
    for name, src_of in (("pos2_cg1_top1", lambda inter, m: inter[m - 1]["a"]),
                         ("pos1_cg1_top1", lambda inter, m: inter[m]["h"]),
                         ("pos3_cg1_top1", lambda inter, m: inter[m - 1]["h"]),
                         ("pos2_cg2_top2", lambda inter, m: inter[m - 1]["a"])):
        cfg, ref, routing = np_out[name]
        k, ok, n = cfg["num_experts_per_tok"], True, 0
        for b in range(len(SEQS)):
            inter = ref[b][1]
            for m in MOE_LAYERS:
                xr = np_rms(src_of(inter, m), t[f"model.layers.{m}.shortcut_layernorm.weight"].astype(np.float64))
                prob = np_softmax(xr @ t[f"model.layers.{m}.mlp.gate.weight"].astype(np.float64).T)
                hand = np.argsort(-prob, axis=-1)[:, :k]
                ok &= np.array_equal(np.asarray(routing[m][b]), hand)
                n += hand.size
        what = {"pos1": "h_m", "pos2": "a_m-1", "pos3": "h_m-1"}[name[:4]]
        check(ok, f"[b] {name}: recorded routed ids == top-{k} of softmax(RMSNorm({what}) Wg^T) by hand ({n} ids)")
    _, _, r_none = np_out["none_cg1_top2"]
    _, _, r_pos2 = np_out["pos2_cg2_top2"]
    check(any(not np.array_equal(r_none[m][b], r_pos2[m][b]) for m in MOE_LAYERS for b in range(len(SEQS))),
          "[b] pos2 routes differently from none (same router weights)")

    # c. cg2 with equal rows: alpha = beta = 0.5 == add with every down_proj of the MoE layers halved;
    #    cg1 with a zero gate: sigmoid(0) = 0.5 on the shared expert only
    for sc in ("pos2", "pos3"):
        cfg = config(sc, "cg2")
        t2 = select(t, cfg)
        for m in MOE_LAYERS:
            row = t2[f"model.layers.{m}.mlp.combine_gate.weight"][0]
            t2[f"model.layers.{m}.mlp.combine_gate.weight"] = np.stack([row, row])
        eq, _ = hf_eval(save(root, f"{sc}_cg2_equal", cfg, t2))
        acfg = config(sc, "add")
        ta = select(t, acfg)
        for n in ta:
            if n.endswith("down_proj.weight") and any(n.startswith(f"model.layers.{m}.mlp.") for m in MOE_LAYERS):
                ta[n] = ta[n] * np.float32(0.5)
        half, _ = hf_eval(save(root, f"{sc}_add_half", acfg, ta))
        err = maxabs(eq, half)
        check(err < 1e-12, f"[c] {sc} + cg2 with equal combine_gate rows == 0.5*(S + R) (max abs {err:.1e})")
    cfg = config("pos2", "cg1")
    t1 = select(t, cfg)
    for m in MOE_LAYERS:
        t1[f"model.layers.{m}.mlp.shared_expert_gate.weight"] = np.zeros((1, H), np.float32)
    zero_gate, _ = hf_eval(save(root, "pos2_cg1_zero", cfg, t1))
    acfg = config("pos2", "add")
    ta = select(t, acfg)
    for m in MOE_LAYERS:
        ta[f"model.layers.{m}.mlp.shared_expert.down_proj.weight"] *= np.float32(0.5)
    half, _ = hf_eval(save(root, "pos2_add_shared_half", acfg, ta))
    err = maxabs(zero_gate, half)
    check(err < 1e-12, f"[c] pos2 + cg1 with a zero gate == 0.5*S + R (max abs {err:.1e})")

    # d. KV cache == full forward
    d = os.path.join(root, "pos2_cg1_top1")
    for dtype, tol in ((torch.float32, 1e-5), (torch.float64, 1e-12)):
        full, rf = hf_eval(d, dtype)
        inc, ri = hf_eval(d, dtype, kv=True)
        same = all(np.array_equal(a, b) for m in rf for a, b in zip(rf[m], ri[m]))
        check(maxabs(full, inc) < tol and same, f"[d] pos2 + cg1 {str(dtype)[6:]}: KV-cache == full forward "
              f"(max abs {maxabs(full, inc):.1e} < {tol:g}), routing equal")
    full, _ = hf_eval(os.path.join(root, "pos3_cg2_top2"))
    inc, _ = hf_eval(os.path.join(root, "pos3_cg2_top2"), kv=True)
    err = maxabs(full, inc)
    check(err < 1e-12, f"[d] pos3 + cg2 float64: KV-cache == full forward (max abs {err:.1e})")

    # CLI: --routing-out records the routed branch
    out, rout = os.path.join(root, "cli.npy"), os.path.join(root, "cli.json")
    ids = ";".join(",".join(map(str, s)) for s in SEQS)
    r = subprocess.run([sys.executable, os.path.join(HERE, "hf_reference.py"), "--model", d, "--ids", ids,
                        "--out", out, "--routing-out", rout], capture_output=True, text=True)
    ok = r.returncode == 0
    if ok:
        rj = json.load(open(rout))
        _, _, routing = np_out["pos2_cg1_top1"]
        ok = rj["moe_layers"] == list(MOE_LAYERS) and rj["architecture"] == "ScMoeForCausalLM" and all(
            np.array_equal(np.array(rj["layers"][str(m)]["ids"]), np.stack(routing[m])) for m in MOE_LAYERS)
        ok &= maxabs(np.load(out), logits["pos2_cg1_top1"]) < 1e-4
    check(ok, f"[b] CLI --routing-out for pos2 + cg1 records the routed branch's ids {r.stderr.strip()}")


# ---------------------------------------------------------------------- e: the training twin
def fd_grads(model, tokens, names_idx, label, aux_coef=0.01, z_coef=0.001, h=1e-5):
    """Central finite differences of the total loss vs autograd at (name, flat index) entries."""
    for p in model.params.values():
        p.grad = None
    tr.compute_loss(model, tokens, aux_coef, z_coef)[0]["total"].backward()
    grads = {n: tr.grad_of(p).clone() for n, p in model.params.items()}

    def loss():
        with torch.no_grad():
            return float(tr.compute_loss(model, tokens, aux_coef, z_coef)[0]["total"])
    worst, rows = 0.0, []
    for name, pick in names_idx:
        g = grads[name].reshape(-1)
        cand = np.flatnonzero(np.abs(g.numpy()) >= 0.05 * float(g.abs().max()))  # relative error needs |g| > 0
        idx = int(cand[pick % len(cand)])
        flat = model.params[name].data.view(-1)
        orig = float(flat[idx])
        flat[idx] = orig + h
        lp = loss()
        flat[idx] = orig - h
        lm = loss()
        flat[idx] = orig
        fd = (lp - lm) / (2 * h)
        rel = abs(fd - float(g[idx])) / max(abs(fd), abs(float(g[idx])))
        worst = max(worst, rel)
        if rel >= 1e-5:
            rows.append(f"{name}[{idx}] fd {fd:.10g} autograd {float(g[idx]):.10g} rel {rel:.1e}")
    check(not rows, f"[e] {label}: finite differences == autograd on {len(names_idx)} entries "
          f"(worst rel err {worst:.1e})" + ("".join("\n     " + r for r in rows)))
    return grads


def check_train(root, t):
    tokens_path = os.path.join(root, "tokens.npy")
    np.save(tokens_path, np.random.default_rng(7).integers(0, V, (2, 10)).astype(np.int32))
    tokens = tr.load_tokens(tokens_path, V)
    seqs = tokens.tolist()
    twin = os.path.join(HERE, "train_reference.py")
    for sc, cb, k in (("pos2", "cg1", 1), ("pos3", "cg2", 2)):
        cfg = config(sc, cb, k)
        d = save(root, f"train_{sc}_{cb}", cfg, select(t, cfg))
        label = f"{sc} + {cb} top-{k}"
        fix = os.path.join(root, f"fix_{sc}_{cb}")
        r = subprocess.run([sys.executable, twin, "--model", d, "--tokens", tokens_path, "--out", fix, "--steps", "2"],
                           capture_output=True, text=True)
        ok = r.returncode == 0 and all(os.path.exists(os.path.join(fix, f)) for f in (
            "logits.npy", "loss.json", "grads.safetensors", "trace.json", "final_weights.safetensors"))
        check(ok, f"[e] {label}: train_reference.py --steps 2 writes its fixture; "
              + r.stderr.strip().replace("\n", "; "))
        if not ok:
            continue
        lj, trace = json.load(open(os.path.join(fix, "loss.json"))), json.load(open(os.path.join(fix, "trace.json")))
        ref, routing = hf_eval(d, torch.float32, seqs=seqs)
        err = maxabs(np.load(os.path.join(fix, "logits.npy")), ref)
        counts_ok = lj["num_moe_layers"] == 2 and all(
            pl["expert_counts"] == np.bincount(np.stack(routing[pl["layer"]]).reshape(-1), minlength=E).tolist()
            for pl in lj["per_layer"])
        check(err < 1e-5 and counts_ok and len(trace["steps"]) == 2 and np.isfinite(trace["final_loss"]["total"]),
              f"[e] {label}: step-0 logits == hf_reference (max abs {err:.1e}), expert counts == the routed "
              f"branch's, losses {[round(s['loss_before_update']['total'], 5) for s in trace['steps']]} -> "
              f"{trace['final_loss']['total']:.5f}")
        grads = safetensors_np.read_file(os.path.join(fix, "grads.safetensors"))
        gate = "shared_expert_gate" if cb == "cg1" else "combine_gate"
        extra = [f"model.layers.{m}.{n}.weight" for m in MOE_LAYERS for n in ("shortcut_layernorm", "mlp." + gate)]
        check(all(np.abs(grads[n]).max() > 0 for n in extra),
              f"[e] {label}: nonzero gradients for shortcut_layernorm and {gate} of both MoE layers")

        model = tr.TrainModel(d, torch.float64)
        early = 2 if sc == "pos2" else 1  # the layer whose output / intermediate the layer-3 shortcut reads
        entries = [(f"model.layers.{m}.shortcut_layernorm.weight", j) for m in MOE_LAYERS for j in (0, 7)]
        entries += [(f"model.layers.{m}.mlp.{gate}.weight", j) for m in MOE_LAYERS for j in (1, 5)]
        entries += [(f"model.layers.{early}.self_attn.{n}_proj.weight", j) for n in ("q", "o", "v") for j in (2, 9)]
        entries += [("model.layers.0.self_attn.k_proj.weight", 3)]
        entries += [(f"model.layers.{m}.mlp.gate.weight", j) for m in MOE_LAYERS for j in (0, 4)]
        entries += [("model.layers.3.mlp.experts.%d.up_proj.weight" % e, 1) for e in range(0, E, 3)]
        entries += [("model.layers.1.mlp.shared_expert.down_proj.weight", 6),
                    ("model.layers.3.post_attention_layernorm.weight", 2)]
        g64 = fd_grads(model, tokens, entries, f"{label} float64 dropless")

        # the earlier layer's attention gradient really has a path through the shortcut
        class Detached(tr.TrainModel):
            def shortcut_input(self, L, h_in, prev):
                src = {"pos1": h_in, "pos2": prev[1], "pos3": prev[0]}[self.cfg.shortcut]
                return hf.rms_norm(src.detach(), L["shortcut_norm"], self.cfg.eps)
        dm = Detached(d, torch.float64)
        tr.compute_loss(dm, tokens, 0.01, 0.001)[0]["total"].backward()
        name = f"model.layers.{early}.self_attn.o_proj.weight"
        a, b = g64[name], dm.params[name].grad
        rel = float((a - b).norm() / a.norm())
        check(rel > 1e-3, f"[e] {label}: detaching the shortcut source changes d loss / d {name} by "
              f"{rel:.1e} (relative): the gradient flows back through the shortcut")

        # capacity: C per expert on the routed pairs, the shared branch untouched
        cap = tr.TrainModel(d, torch.float64, capacity_factor=0.5)
        fd_grads(cap, tokens, entries[::2], f"{label} float64 capacity 0.5")
        check_capacity_layer(cap, t, cfg, label)


def check_capacity_layer(model, t, cfg, label):
    """One MoE layer under a capacity limit, re-derived in numpy: routed pairs ranked by the router
    probability of xr, at most C per expert; the shared expert and the gate read x and are never dropped."""
    m, k, g = 3, cfg["num_experts_per_tok"], model.capacity_factor
    rng = np.random.default_rng(21)
    x, xr = rng.standard_normal((1, 40, H)), rng.standard_normal((1, 40, H))
    model.stats = []
    with torch.no_grad():
        got = model.moe(model.layers[m], torch.from_numpy(x), m, xr=torch.from_numpy(xr))[0].numpy()
    st = model.stats[0]
    f = lambda n: t[f"model.layers.{m}.{n}"].astype(np.float64)
    x, xr = x[0], xr[0]
    logits = xr @ f("mlp.gate.weight").T
    prob = np_softmax(logits)
    ids = np_topk(prob, k)
    C = int(np.ceil(g * 40 * k / E))
    R, kept = np.zeros_like(x), np.zeros(E, int)
    for e in range(E):
        pairs = sorted(((tok, j) for tok in range(40) for j in range(k) if ids[tok, j] == e),
                       key=lambda p: (-prob[p[0], e], p[0]))[:C]
        for tok, j in pairs:
            R[tok] += prob[tok, e] * np_swiglu(xr[tok], *(f(f"mlp.experts.{e}.{n}_proj.weight")
                                                          for n in ("gate", "up", "down")))
        kept[e] = len(pairs)
    S = np_swiglu(x, *(f(f"mlp.shared_expert.{n}_proj.weight") for n in ("gate", "up", "down")))
    if cfg["scmoe_combine"] == "cg1":
        want = S / (1 + np.exp(-(x @ f("mlp.shared_expert_gate.weight").T))) + R
    else:
        ab = np_softmax(x @ f("mlp.combine_gate.weight").T)
        want = ab[:, :1] * S + ab[:, 1:] * R
    counts = np.bincount(ids.reshape(-1), minlength=E)
    aux = E * float((counts / (40 * k) * prob.mean(0)).sum())
    lse = np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1)) + logits.max(-1)
    z = float((lse ** 2).mean())
    dropped = int(counts.sum() - kept.sum())
    check(maxabs(got, want) < 1e-12 and st["kept_counts"] == kept.tolist() and st["capacity"] == C
          and st["dropped_pairs"] == dropped > 0 and st["expert_counts"] == counts.tolist()
          and abs(float(st["aux"]) - aux) < 1e-12 and abs(float(st["z"]) - z) < 1e-12,
          f"[e] {label}: capacity {g} (C = {C}) drops {dropped} routed pairs only, MoE output == numpy "
          f"(max abs {maxabs(got, want):.1e}); aux / z / counts from the shortcut input's router logits")


# ---------------------------------------------------------------------- f: config errors
def check_errors(root, t):
    cases = [("scmoe_shortcut missing", dict(scmoe_shortcut=None), "scmoe_shortcut"),
             ("scmoe_combine missing", dict(scmoe_combine=None), "scmoe_combine"),
             ("num_experts missing", dict(num_experts=None), "num_experts missing"),
             ("scmoe_shortcut pos4", dict(scmoe_shortcut="pos4"), "scmoe_shortcut"),
             ("scmoe_combine cg3", dict(scmoe_combine="cg3"), "scmoe_combine"),
             ("pos2 without a shared expert", dict(shared_expert_intermediate_size=0, scmoe_combine="add"),
              "shared_expert_intermediate_size"),
             ("cg1 without a shared expert", dict(shared_expert_intermediate_size=0, scmoe_shortcut="none"),
              "shared_expert_intermediate_size"),
             ("pos2 with MoE layer 0", dict(decoder_sparse_step=1), "layer 0")]
    for what, change, needle in cases:
        cfg = config("pos2", "cg1")
        for kk, v in change.items():
            if v is None:
                cfg.pop(kk)
            else:
                cfg[kk] = v
        try:
            hf.Config(cfg)
            msg = "accepted"
        except (ValueError, KeyError) as e:
            msg = str(e)
        check(needle in msg, f"[f] {what}: rejected ({msg})")
    cfg = config("none", "add")
    cfg["decoder_sparse_step"] = 1
    c = hf.Config(cfg)
    check(all(c.is_moe_layer(i) for i in range(NL)), "[f] none + decoder_sparse_step 1: every layer MoE (allowed)")
    cfg = config("pos2", "cg1")
    d = save(root, "missing_tensor", cfg, {n: x for n, x in select(t, cfg).items()
                                           if n != "model.layers.3.shortcut_layernorm.weight"})
    r = subprocess.run([sys.executable, os.path.join(HERE, "hf_reference.py"), "--model", d, "--ids", "1,2",
                        "--out", os.path.join(root, "x.npy")], capture_output=True, text=True)
    check(r.returncode == 1 and "shortcut_layernorm" in r.stderr, f"[f] missing shortcut_layernorm: CLI exits 1 "
          f"({r.stderr.strip()})")
    cfg.pop("scmoe_combine")
    d = save(root, "missing_key", cfg, select(t, config("pos2", "cg1")))
    r = subprocess.run([sys.executable, os.path.join(HERE, "hf_reference.py"), "--model", d, "--ids", "1,2",
                        "--out", os.path.join(root, "x.npy")], capture_output=True, text=True)
    check(r.returncode == 1 and "scmoe_combine" in r.stderr,
          f"[f] missing scmoe_combine: CLI exits 1 ({r.stderr.strip()})")


def main():
    torch.set_num_threads(1)
    t = build_all(seed=5)
    with tempfile.TemporaryDirectory() as root:
        check_forward(root, t)
        check_train(root, t)
        check_errors(root, t)
    print(f"scmoe_reference_checks: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
