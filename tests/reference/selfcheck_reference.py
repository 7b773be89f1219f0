#!/usr/bin/python3
"""Self-check of the PyTorch reference (hf_reference.py) itself; it does not touch Switchyard.

Builds tiny random checkpoints of every supported architecture with numpy (safetensors written
here, in F32 / F16 / BF16, single-file and sharded, per-expert and fused v5 expert tensors) and checks:
  - full-sequence forward == token-by-token forward with the reference's KV cache (float64),
  - batch of sequences == each sequence alone (float64); unequal lengths are NaN-padded,
  - float32 logits vs float64 logits pass compare_npy.py's tolerance (calibrates its constant),
  - Mixtral with k = num_experts (renormalised) == the dense softmax mixture of all experts,
  - per-expert and fused (gate_up_proj / down_proj) layouts of the same weights give identical logits,
  - the Dots1 (DeepSeek-V3) grouped router == an independent numpy re-derivation,
  - the BF16 reader == torch's own bfloat16 rounding; the CLI writes .npy + routing JSON; exit 2 on
    an unknown architecture.
Run: /usr/bin/python3 tests/reference/selfcheck_reference.py   (about 5 s; exit 0 on success)
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
import compare_npy  # noqa: E402
import hf_reference  # noqa: E402
import safetensors_np  # noqa: E402

V, H, NH, NKV, L = 96, 32, 4, 2, 2
E, K, I_MOE, I_DENSE = 4, 2, 16, 24
FAILURES = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what)
    if not cond:
        FAILURES.append(what)


def rnd(rng, *shape, std=0.2):
    return (rng.standard_normal(shape) * std).astype(np.float32)


def attn_tensors(rng, p, hd, q_bias=False, qk_norm=None):
    t = {p + "self_attn.q_proj.weight": rnd(rng, NH * hd, H), p + "self_attn.k_proj.weight": rnd(rng, NKV * hd, H),
         p + "self_attn.v_proj.weight": rnd(rng, NKV * hd, H), p + "self_attn.o_proj.weight": rnd(rng, H, NH * hd),
         p + "input_layernorm.weight": 1 + rnd(rng, H, std=0.1),
         p + "post_attention_layernorm.weight": 1 + rnd(rng, H, std=0.1)}
    if q_bias:
        for n, rows in (("q", NH * hd), ("k", NKV * hd), ("v", NKV * hd)):
            t[p + f"self_attn.{n}_proj.bias"] = rnd(rng, rows)
    if qk_norm == "head":
        t[p + "self_attn.q_norm.weight"] = 1 + rnd(rng, hd, std=0.1)
        t[p + "self_attn.k_norm.weight"] = 1 + rnd(rng, hd, std=0.1)
    elif qk_norm == "full":
        t[p + "self_attn.q_norm.weight"] = 1 + rnd(rng, NH * hd, std=0.1)
        t[p + "self_attn.k_norm.weight"] = 1 + rnd(rng, NKV * hd, std=0.1)
    return t


def swiglu_tensors(rng, prefix, inter, names=("gate_proj", "up_proj", "down_proj")):
    return {prefix + names[0] + ".weight": rnd(rng, inter, H), prefix + names[1] + ".weight": rnd(rng, inter, H),
            prefix + names[2] + ".weight": rnd(rng, H, inter)}


def fuse_experts(t, mp, names, num_experts):
    """Per-expert tensors -> transformers v5 fused gate_up_proj [E, 2I, H] (gate first) / down_proj [E, H, I]."""
    g = [t.pop(f"{mp}experts.{e}.{names[0]}.weight") for e in range(num_experts)]
    u = [t.pop(f"{mp}experts.{e}.{names[1]}.weight") for e in range(num_experts)]
    d = [t.pop(f"{mp}experts.{e}.{names[2]}.weight") for e in range(num_experts)]
    t[mp + "experts.gate_up_proj"] = np.stack([np.concatenate([a, b]) for a, b in zip(g, u)])
    t[mp + "experts.down_proj"] = np.stack(d)


def build(arch, seed, fused=False, top_k=K):
    """Returns (config dict, tensors dict) for a tiny random model of `arch`."""
    rng = np.random.default_rng(seed)
    cfg = {"architectures": [arch], "hidden_size": H, "num_attention_heads": NH, "num_key_value_heads": NKV,
           "num_hidden_layers": L, "vocab_size": V, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "num_experts_per_tok": top_k, "hidden_act": "silu", "tie_word_embeddings": False}
    t = {"model.embed_tokens.weight": rnd(rng, V, H, std=1.0), "model.norm.weight": 1 + rnd(rng, H, std=0.1),
         "lm_head.weight": rnd(rng, V, H)}
    hd = H // NH
    if arch == "MixtralForCausalLM":
        cfg.update(num_local_experts=E, intermediate_size=I_MOE, rope_theta=1e6, sliding_window=None)
        for i in range(L):
            p = f"model.layers.{i}."
            t.update(attn_tensors(rng, p, hd))
            mp = p + ("mlp." if fused else "block_sparse_moe.")
            t[mp + "gate.weight"] = rnd(rng, E, H, std=0.5)
            for e in range(E):
                t.update(swiglu_tensors(rng, f"{mp}experts.{e}.", I_MOE, ("w1", "w3", "w2")))
            if fused:
                fuse_experts(t, mp, ("w1", "w3", "w2"), E)
    elif arch in ("Qwen2MoeForCausalLM", "Qwen3MoeForCausalLM", "OlmoeForCausalLM"):
        cfg.update(num_experts=E, moe_intermediate_size=I_MOE, intermediate_size=I_DENSE)
        qk_norm = None
        if arch == "Qwen2MoeForCausalLM":
            cfg.update(shared_expert_intermediate_size=20, norm_topk_prob=False, mlp_only_layers=[0], qkv_bias=True)
        elif arch == "Qwen3MoeForCausalLM":
            hd = 16  # explicit head_dim != hidden / heads
            cfg.update(head_dim=hd, norm_topk_prob=True, decoder_sparse_step=1, tie_word_embeddings=True)
            cfg["rope_parameters"] = {"rope_theta": cfg.pop("rope_theta"), "rope_type": "default"}
            del t["lm_head.weight"]
            qk_norm = "head"
        else:
            cfg.update(intermediate_size=I_MOE, norm_topk_prob=False, clip_qkv=0.6)
            qk_norm = "full"
        for i in range(L):
            p = f"model.layers.{i}."
            t.update(attn_tensors(rng, p, hd, q_bias=arch == "Qwen2MoeForCausalLM", qk_norm=qk_norm))
            if arch == "Qwen2MoeForCausalLM" and i == 0:
                t.update(swiglu_tensors(rng, p + "mlp.", I_DENSE))
                continue
            t[p + "mlp.gate.weight"] = rnd(rng, E, H, std=0.5)
            for e in range(E):
                t.update(swiglu_tensors(rng, f"{p}mlp.experts.{e}.", I_MOE))
            if arch == "Qwen2MoeForCausalLM":
                t.update(swiglu_tensors(rng, p + "mlp.shared_expert.", 20))
                t[p + "mlp.shared_expert_gate.weight"] = rnd(rng, 1, H, std=0.5)
            if fused:
                fuse_experts(t, p + "mlp.", ("gate_proj", "up_proj", "down_proj"), E)
    elif arch == "Dots1ForCausalLM":
        ne = 8
        cfg.update(num_hidden_layers=3, n_routed_experts=ne, n_shared_experts=2, moe_intermediate_size=I_MOE,
                   intermediate_size=I_DENSE, n_group=4, topk_group=2, num_experts_per_tok=3,
                   routed_scaling_factor=2.5, norm_topk_prob=True, first_k_dense_replace=1, head_dim=hd)
        for i in range(3):
            p = f"model.layers.{i}."
            t.update(attn_tensors(rng, p, hd, qk_norm="head"))
            if i == 0:
                t.update(swiglu_tensors(rng, p + "mlp.", I_DENSE))
                continue
            t[p + "mlp.gate.weight"] = rnd(rng, ne, H, std=0.5)
            t[p + "mlp.gate.e_score_correction_bias"] = rnd(rng, ne, std=0.3)
            for e in range(ne):
                t.update(swiglu_tensors(rng, f"{p}mlp.experts.{e}.", I_MOE))
            t.update(swiglu_tensors(rng, p + "mlp.shared_experts.", 2 * I_MOE))
            if fused:
                fuse_experts(t, p + "mlp.", ("gate_proj", "up_proj", "down_proj"), ne)
    return cfg, t


def save(root, name, cfg, tensors, dtype="F32", shards=1):
    d = os.path.join(root, name)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)
    if shards > 1:
        safetensors_np.write_sharded(d, tensors, dtype, shards)
    else:
        safetensors_np.write_file(os.path.join(d, "model.safetensors"), tensors, dtype)
    return d


def max_rel(a, b):
    return float(np.nanmax(np.abs(a - b)) / max(1.0, np.nanmax(np.abs(b))))


def check_model(root, name, model_dir, seqs):
    m64 = hf_reference.Model(model_dir, torch.float64)
    full, r_full = hf_reference.evaluate(m64, seqs)
    inc, r_inc = hf_reference.evaluate(m64, seqs, kv_cache=True)
    check(max_rel(inc, full) < 1e-12, f"{name}: KV-cache token-by-token == full forward ({max_rel(inc, full):.1e})")
    check(all(np.array_equal(a, b) for layer in r_full for a, b in zip(r_full[layer], r_inc[layer])),
          f"{name}: KV-cache routing == full routing")
    singles = np.concatenate([hf_reference.evaluate(m64, [s])[0] for s in seqs])
    check(max_rel(full, singles) < 1e-12, f"{name}: batch == single sequences ({max_rel(full, singles):.1e})")
    m32 = hf_reference.Model(model_dir, torch.float32)
    f32, _ = hf_reference.evaluate(m32, seqs)
    a, b = os.path.join(root, name + "_f32.npy"), os.path.join(root, name + "_f64.npy")
    np.save(a, f32)
    np.save(b, full.astype(np.float32))
    check(compare_npy.main([a, b, "--dtype", "f32", "--model", model_dir, "--label", name]) == 0,
          f"{name}: float32 vs float64 within compare_npy tolerance")
    return full


def check_sliding_window(root, seqs):
    """Dots1 rule: layers i >= max_window_layers slide. A window >= the sequence changes nothing;
    a short window changes the logits of later tokens only; the KV-cache path agrees with it."""
    cfg, t = build("Dots1ForCausalLM", 13)
    plain, _ = hf_reference.evaluate(hf_reference.Model(save(root, "sw0", cfg, t), torch.float64), seqs)
    cfg.update(sliding_window=len(seqs[0]), max_window_layers=1)
    wide, _ = hf_reference.evaluate(hf_reference.Model(save(root, "sw1", cfg, t), torch.float64), seqs)
    cfg.update(sliding_window=3)
    m = hf_reference.Model(save(root, "sw2", cfg, t), torch.float64)
    short, _ = hf_reference.evaluate(m, seqs)
    inc, _ = hf_reference.evaluate(m, seqs, kv_cache=True)
    check(np.array_equal(plain, wide) and np.array_equal(plain[:, :3], short[:, :3])
          and not np.allclose(plain[:, 3:], short[:, 3:]) and max_rel(inc, short) < 1e-12,
          "sliding window: wide == none, short window changes only tokens >= window, KV cache agrees")


def check_dense_mixture(root):
    """k = num_experts with renormalisation: Mixtral MoE == sum_e softmax(router x)_e * expert_e(x)."""
    cfg, t = build("MixtralForCausalLM", 11, top_k=E)
    m = hf_reference.Model(save(root, "mixtral_dense", cfg, t), torch.float64)
    x = torch.from_numpy(np.random.default_rng(3).standard_normal((2, 5, H)))
    Lr = m.layers[0]
    got = m.moe(Lr, x, 0, record=False)
    p = torch.softmax(x @ torch.from_numpy(t["model.layers.0.block_sparse_moe.gate.weight"]).double().t(), -1)
    want = torch.zeros_like(x)
    for e in range(E):
        w = {n: torch.from_numpy(t[f"model.layers.0.block_sparse_moe.experts.{e}.{n}.weight"]).double()
             for n in ("w1", "w2", "w3")}
        y = (torch.nn.functional.silu(x @ w["w1"].t()) * (x @ w["w3"].t())) @ w["w2"].t()
        want += p[..., e:e + 1] * y
    err = float((got - want).abs().max())
    check(err < 1e-12, f"Mixtral k=E MoE == dense softmax mixture ({err:.1e})")


def check_dots_router(root):
    """Re-derive the DeepSeek-V3/Dots1 grouped noaux_tc routing in numpy, token by token."""
    cfg, t = build("Dots1ForCausalLM", 12)
    m = hf_reference.Model(save(root, "dots_router", cfg, t), torch.float64)
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, H))
    ids, w = m.route(m.layers[1], torch.from_numpy(x))
    W, bias = t["model.layers.1.mlp.gate.weight"].astype(np.float64), t["model.layers.1.mlp.gate.e_score_correction_bias"]
    ok = True
    for n in range(x.shape[0]):
        s = 1 / (1 + np.exp(-(W @ x[n])))
        c = s + bias
        groups = c.reshape(4, 2)
        gscore = np.sort(groups, axis=1)[:, -2:].sum(1)
        kept = set(np.argsort(-gscore)[:2].tolist())
        masked = np.array([c[e] if e // 2 in kept else 0.0 for e in range(8)])
        sel = np.argsort(-masked, kind="stable")[:3]
        wt = s[sel] / (s[sel].sum() + 1e-20) * 2.5
        ok &= sorted(sel.tolist()) == sorted(ids[n].tolist())
        ok &= np.allclose(np.sort(wt), np.sort(w[n].numpy()), rtol=0, atol=1e-12)
    check(ok, "Dots1 grouped router == numpy re-derivation (64 tokens)")


def check_bf16_reader(root):
    x = np.random.default_rng(7).standard_normal((33, 17)).astype(np.float32) * 3
    path = os.path.join(root, "bf16.safetensors")
    safetensors_np.write_file(path, {"x": x}, "BF16")
    got = safetensors_np.read_file(path)["x"]
    want = torch.from_numpy(x).to(torch.bfloat16).to(torch.float32).numpy()
    check(np.array_equal(got, want), "BF16 writer+reader == torch bfloat16 rounding")


def check_cli(root, model_dir):
    script = os.path.join(HERE, "hf_reference.py")
    out, rout = os.path.join(root, "cli.npy"), os.path.join(root, "cli_routing.json")
    r = subprocess.run([sys.executable, script, "--model", model_dir, "--ids", "1,5,9,2;3,3,7,60",
                        "--out", out, "--routing-out", rout], capture_output=True, text=True)
    ok = r.returncode == 0 and np.load(out).shape == (2, 4, V)
    if ok:
        routing = json.load(open(rout))
        ok = routing["moe_layers"] == [0, 1] and np.array(routing["layers"]["0"]["ids"]).shape == (2, 4, K) \
            and sum(routing["layers"]["1"]["expert_counts"]) == 2 * 4 * K
    check(ok, f"CLI writes logits [2,4,V] and routing JSON {r.stderr.strip()}")
    bad = os.path.join(root, "bad")
    os.makedirs(bad, exist_ok=True)
    json.dump({"architectures": ["NopeForCausalLM"]}, open(os.path.join(bad, "config.json"), "w"))
    r = subprocess.run([sys.executable, script, "--model", bad, "--ids", "1", "--out", out],
                       capture_output=True, text=True)
    check(r.returncode == 2 and "unknown architecture" in r.stderr, "unknown architecture exits 2")


def main():
    torch.set_num_threads(min(4, torch.get_num_threads()))
    seqs = [[1, 5, 9, 2, 77, 30, 4], [3, 3, 7, 60, 12, 95, 0]]
    with tempfile.TemporaryDirectory() as root:
        check_bf16_reader(root)
        variants = [("mixtral_bf16", "MixtralForCausalLM", False, "BF16", 1),
                    ("qwen2moe_f16", "Qwen2MoeForCausalLM", False, "F16", 1),
                    ("qwen3moe_sharded", "Qwen3MoeForCausalLM", False, "F32", 3),
                    ("olmoe_f32", "OlmoeForCausalLM", False, "F32", 1),
                    ("dots1_bf16", "Dots1ForCausalLM", False, "BF16", 2)]
        dirs = {}
        for name, arch, fused, dtype, shards in variants:
            cfg, t = build(arch, seed=len(dirs) + 1, fused=fused)
            dirs[name] = save(root, name, cfg, t, dtype, shards)
            ref = check_model(root, name, dirs[name], seqs)
            cfg, t = build(arch, seed=len(dirs), fused=True)  # same seed/weights, fused expert layout
            fused_out, _ = hf_reference.evaluate(hf_reference.Model(save(root, name + "_fused", cfg, t, dtype),
                                                                    torch.float64), seqs)
            check(np.array_equal(fused_out, ref), f"{name}: fused v5 expert tensors == per-expert tensors")
        m = hf_reference.Model(dirs["olmoe_f32"], torch.float64)
        ragged, _ = hf_reference.evaluate(m, [[1, 2, 3], [4, 5]])
        alone, _ = hf_reference.evaluate(m, [[4, 5]])
        check(np.isnan(ragged[1, 2]).all() and np.array_equal(ragged[1, :2], alone[0]),
              "unequal lengths: run separately, NaN right-padding")
        check_sliding_window(root, seqs)
        check_dense_mixture(root)
        check_dots_router(root)
        check_cli(root, dirs["mixtral_bf16"])
    print(f"selfcheck: {len(FAILURES)} failure(s)")
    return 1 if FAILURES else 0


if __name__ == "__main__":
    sys.exit(main())
