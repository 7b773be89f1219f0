#!/usr/bin/python3
"""PyTorch twin of Switchyard's trainer (issue 7): loss, gradients and AdamW steps on one batch.

Usage:
  /usr/bin/python3 train_reference.py --model DIR --tokens TOKENS.npy --out FIXTURE_DIR
      [--steps 10] [--lr 3e-3] [--warmup 3] [--min-lr-ratio 0.1] [--weight-decay 0.1]
      [--beta1 0.9] [--beta2 0.95] [--eps 1e-8] [--clip 1.0] [--aux-coef 0.01] [--z-coef 0.001]
      [--capacity-factor 0] [--dtype float32|float64]

The forward is hf_reference.py's (imported, not copied): its Model loads DIR and its attention,
RMSNorm, RoPE, router and SwiGLU experts are used as they are. This file only (1) makes every
checkpoint tensor a leaf tensor with requires_grad (one leaf per checkpoint name; tied embeddings
are one leaf, because hf_reference assigns lm_head = embed), and (2) replaces Model.moe by a
version that also returns the router statistics and applies the optional capacity limit.
Autograd provides the gradients. Supported: every family hf_reference supports (mixtral,
qwen2_moe with the sigmoid-gated shared expert, qwen3_moe, olmoe, dots1, scmoe). For ScMoE
(docs/scmoe.md) the router, the routed experts, the capacity limit and the router losses use the
routed branch's input xr = RMSNorm(shortcut source, shortcut_layernorm) (x itself for shortcut
none), while the shared expert and the cg1 / cg2 gate read x; the gradient reaches
shortcut_layernorm, the gates and, through the shortcut, the earlier layer the source comes from.

Inputs. TOKENS.npy: integer [B, S] (S >= 2), ids in [0, vocab). Positions restart at 0 in every row.

Loss (what Switchyard's trainer must match):
  ce    = mean over the B*(S-1) positions (b, s < S-1) of  -log_softmax(logits[b, s])[tokens[b, s+1]]
  per MoE layer l, over its T = B*S tokens (flat index t = b*S + s), router logits r = x @ W_router^T
  [T, E] (x = post-attention RMSNorm output; for ScMoE x = xr, the routed branch's input),
  p = softmax(r) [T, E], ids [T, k] = the family's top-k selection (hf_reference.route):
    counts_i = number of (t, slot) with ids[t, slot] == i          (before any capacity drop)
    D_i      = counts_i / (T*k)                                     (a constant: no gradient)
    P_i      = mean_t p[t, i]                                       (gradient flows)
    aux_l    = E * sum_i D_i * P_i                                  (1 at uniform p + balanced load)
    z_l      = mean_t (logsumexp_e r[t, e])^2                       (ST-MoE router z-loss)
  aux = mean_l aux_l, z = mean_l z_l over MoE layers (both 0 if the model has none)
  total = ce + aux_coef * aux + z_coef * z
  For dots1 (sigmoid gate with selection bias) p is still softmax(r), literally as above.

Capacity (--capacity-factor g > 0; 0 = dropless): per MoE layer, C = ceil(g*T*k/E) evaluated in
  double as ceil(((g*T)*k)/E). For each expert e with more than C pairs routed to it, the C pairs
  with the highest score s[t, e] are kept, s = the router's score (p for softmax gates, sigmoid(r)
  for dots1's sigmoid gate, without the selection bias); ties go to the earlier token (lower t = b*S + s). Dropped
  pairs contribute nothing to the MoE output (their expert is not run for them, and the surviving
  top-k weights of the token are NOT renormalised). The shared expert (qwen2_moe, dots1, scmoe)
  and scmoe's cg1 / cg2 gate are never dropped. counts_i / D_i still count the pairs before
  dropping. Without capacity the MoE output is exactly hf_reference's.

Optimizer (s = 1 .. steps, full batch, the same tokens every step):
  lr(s) = lr_max * s / warmup                                              if s <= warmup
        = lr_min + 0.5*(lr_max - lr_min)*(1 + cos(pi*(s - warmup)/(steps - warmup)))   otherwise,
          lr_min = min_lr_ratio * lr_max   (so the last step has lr_min)
  g = d total / d theta for every trainable tensor (all float tensors the forward uses, except the
      dots1 e_score_correction_bias, which is a buffer in HF: grad 0, never updated)
  norm = sqrt(sum over tensors of sum g^2)   (torch.nn.utils.clip_grad_norm_, 2-norm)
  if clip > 0: g *= min(1, clip / (norm + 1e-6))
  AdamW (torch.optim.AdamW, amsgrad off), t = s:
    theta *= 1 - lr*wd                       (wd = weight_decay if theta.ndim >= 2 else 0)
    m = beta1*m + (1-beta1)*g ;  v = beta2*v + (1-beta2)*g^2
    theta -= (lr / (1 - beta1^t)) * m / (sqrt(v) / sqrt(1 - beta2^t) + eps)

Outputs in FIXTURE_DIR (all arrays float32, whatever --dtype):
  logits.npy               [B, S, V] step-0 logits (before any update)
  loss.json                step-0 {ce, aux, z, total, per_layer: [{layer, aux, z, expert_counts,
                           kept_counts, dropped_pairs, capacity}], num_moe_layers, ...settings}
  grads.safetensors        step-0 gradient of total for every checkpoint tensor, same names/shapes
                           as DIR's safetensors (a tied lm_head.weight present in the file gets the
                           shared tensor's gradient; tensors the forward does not use get zeros)
  trace.json               {settings, steps: [{step, lr, loss_before_update: {total, ce, aux, z},
                           grad_norm_before_clip, clip_scale}], final_loss: {total, ce, aux, z}}
  final_weights.safetensors every checkpoint tensor after the last step (same names/shapes)
Exit status: 0 ok, 1 bad input/checkpoint, 2 unsupported architecture or feature.
"""
import argparse
import json
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import hf_reference as hf  # noqa: E402
import safetensors_np  # noqa: E402

FROZEN_SUFFIXES = ("e_score_correction_bias",)  # HF buffers, not parameters


# ---------------------------------------------------------------------- pieces with unit tests
def router_losses(logits, ids, num_experts):
    """logits [T, E] (router logits), ids [T, k] (selected experts) -> (aux, z, counts [E] int64).
    aux = E * sum_i D_i * P_i with D from counts (no gradient), P = mean softmax; z = mean lse^2."""
    T, k = ids.shape
    counts = torch.bincount(ids.reshape(-1), minlength=num_experts)
    D = counts.to(logits.dtype) / float(T * k)
    P = torch.softmax(logits, dim=-1).mean(0)
    aux = num_experts * (D * P).sum()
    z = torch.logsumexp(logits, dim=-1).pow(2).mean()
    return aux, z, counts


def capacity_of(capacity_factor, num_tokens, top_k, num_experts):
    """C = ceil(g*T*k/E), evaluated in double left to right."""
    return int(math.ceil(capacity_factor * num_tokens * top_k / num_experts))


def capacity_keep(ids, probs, capacity_factor):
    """ids [T, k], probs [T, E] -> bool keep mask [T, k]. Per expert keep the C pairs with the highest
    probs[t, e], ties to the lower token index; everything kept when capacity_factor <= 0."""
    T, k = ids.shape
    E = probs.shape[1]
    keep = torch.zeros(T, k, dtype=torch.bool)
    if capacity_factor <= 0:
        keep[:] = True
        return keep
    C = capacity_of(capacity_factor, T, k, E)
    ids_l, pr = ids.tolist(), probs.detach().tolist()
    for e in range(E):
        pairs = [(t, j) for t in range(T) for j in range(k) if ids_l[t][j] == e]
        pairs.sort(key=lambda tj: (-pr[tj[0]][e], tj[0]))  # highest prob first, then earlier token
        for t, j in pairs[:C]:
            keep[t, j] = True
    return keep


def lr_at(step, steps, lr_max, warmup, min_lr_ratio):
    """Learning rate of 1-based step `step`: linear warmup, then cosine to min_lr_ratio * lr_max."""
    if step <= warmup:
        return lr_max * step / warmup
    lr_min = min_lr_ratio * lr_max
    return lr_min + 0.5 * (lr_max - lr_min) * (1.0 + math.cos(math.pi * (step - warmup) / (steps - warmup)))


class AdamW:
    """torch.optim.AdamW (amsgrad off) written out, with weight decay only where ndim >= 2."""

    def __init__(self, params, beta1, beta2, eps, weight_decay):
        self.params = params  # list of leaf tensors
        self.beta1, self.beta2, self.eps, self.wd = beta1, beta2, eps, weight_decay
        self.m = [torch.zeros_like(p) for p in params]
        self.v = [torch.zeros_like(p) for p in params]
        self.t = 0

    @torch.no_grad()
    def step(self, lr):
        self.t += 1
        b1, b2 = self.beta1, self.beta2
        bc1, bc2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for p, m, v in zip(self.params, self.m, self.v):
            g = p.grad
            if p.dim() >= 2:
                p.mul_(1 - lr * self.wd)
            m.mul_(b1).add_(g, alpha=1 - b1)
            v.mul_(b2).addcmul_(g, g, value=1 - b2)
            denom = (v.sqrt() / math.sqrt(bc2)).add_(self.eps)
            p.addcdiv_(m, denom, value=-lr / bc1)


@torch.no_grad()
def clip_grads(params, max_norm):
    """Global 2-norm of the gradients (before clipping) and the scale applied (clip_grad_norm_)."""
    norm = torch.norm(torch.stack([torch.norm(p.grad, 2) for p in params]), 2)
    scale = 1.0
    if max_norm > 0:
        scale = float(torch.clamp(max_norm / (norm + 1e-6), max=1.0))
        for p in params:
            p.grad.mul_(scale)
    return float(norm), scale


# ---------------------------------------------------------------------- the model
class TrainModel(hf.Model):
    """hf_reference.Model whose tensors are autograd leaves and whose MoE records router statistics."""

    def __init__(self, model_dir, dtype=torch.float32, capacity_factor=0.0):
        self.params = {}  # checkpoint name -> leaf tensor (filled by t() during Model.__init__)
        self.capacity_factor = capacity_factor
        self.stats = []
        super().__init__(model_dir, dtype)
        self.routing = {}
        self.tied_alias = None
        if self.lm_head is self.embed and "lm_head.weight" in self.raw:
            self.tied_alias = "lm_head.weight"  # in the file but tied: it is the embedding

    def t(self, name, required=True):
        if name in self.params:
            return self.params[name]
        x = super().t(name, required)
        if x is None:
            return None
        x.requires_grad_(not name.endswith(FROZEN_SUFFIXES))
        self.params[name] = x
        return x

    def trainable(self):
        """(name, leaf) of every trainable tensor, in checkpoint-name order."""
        return [(n, p) for n, p in sorted(self.params.items()) if p.requires_grad]

    def moe(self, L, x, layer_idx, record=False, xr=None):
        """hf_reference.Model.moe plus router statistics and the optional capacity drop. Everything
        routed (statistics, capacity) uses the routed branch's input: ScMoE's xr, else x."""
        B, T, H = x.shape
        flat = x.reshape(-1, H)
        rflat = flat if xr is None else xr.reshape(-1, H)
        router_logits = rflat @ L["router"].t()  # [N, E], the product hf_reference.route computes
        ids, w = self.route(L, rflat)
        # Capacity priority: the router's own score (sigmoid for the DeepSeek-V3-style gate)
        sigmoid_gate = self.cfg.arch == "Dots1ForCausalLM"
        scores = router_logits.sigmoid() if sigmoid_gate else torch.softmax(router_logits, dim=-1)
        keep = capacity_keep(ids, scores, self.capacity_factor)
        out = self.experts_out(L, flat, ids, w, keep, rflat)
        aux, z, counts = router_losses(router_logits, ids, len(L["experts"]))
        E = len(L["experts"])
        kept = torch.bincount(ids[keep].reshape(-1), minlength=E)
        self.stats.append({"layer": layer_idx, "aux": aux, "z": z, "expert_counts": counts.tolist(),
                           "kept_counts": kept.tolist(), "dropped_pairs": int((~keep).sum()),
                           "capacity": capacity_of(self.capacity_factor, ids.shape[0], ids.shape[1], E)
                           if self.capacity_factor > 0 else None})
        return out.view(B, T, H)


def compute_loss(model, tokens, aux_coef, z_coef):
    """tokens LongTensor [B, S] -> (dict of scalar tensors total/ce/aux/z, logits [B, S, V], per-layer stats)."""
    model.stats = []
    logits = model.forward(tokens)
    V = logits.shape[-1]
    ce = torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, V), tokens[:, 1:].reshape(-1))
    if model.stats:
        aux = torch.stack([s["aux"] for s in model.stats]).mean()
        z = torch.stack([s["z"] for s in model.stats]).mean()
    else:
        aux = z = torch.zeros((), dtype=logits.dtype)
    total = ce + aux_coef * aux + z_coef * z
    return {"total": total, "ce": ce, "aux": aux, "z": z}, logits, model.stats


def floats(losses):
    return {k: float(v) for k, v in losses.items()}


def per_layer_json(stats):
    return [{**s, "aux": float(s["aux"]), "z": float(s["z"])} for s in stats]


def checkpoint_arrays(model, of_leaf, of_unused):
    """{name: float32 array} for every tensor in the checkpoint file. of_leaf(leaf) -> tensor for the
    tensors the forward uses (a tied lm_head.weight present in the file is the embedding leaf),
    of_unused(raw ndarray) for the others."""
    out = {}
    for name, raw in model.raw.items():
        leaf = model.embed if name == model.tied_alias else model.params.get(name)
        value = of_leaf(leaf).detach() if leaf is not None else torch.from_numpy(np.asarray(of_unused(raw)))
        out[name] = value.to(torch.float32).numpy()
    return out


def grad_of(leaf):
    return leaf.grad if leaf.grad is not None else torch.zeros_like(leaf)


def load_tokens(path, vocab):
    tok = np.load(path)
    if tok.ndim != 2 or tok.shape[1] < 2 or tok.shape[0] < 1:
        raise ValueError(f"{path}: expected integer tokens [B, S] with S >= 2, got shape {tok.shape}")
    if not np.issubdtype(tok.dtype, np.integer):
        raise ValueError(f"{path}: expected an integer array, got {tok.dtype}")
    if tok.min() < 0 or tok.max() >= vocab:
        raise ValueError(f"{path}: token ids must lie in [0, {vocab}), got [{tok.min()}, {tok.max()}]")
    return torch.from_numpy(tok.astype(np.int64))


def train(args):
    dtype = torch.float64 if args.dtype == "float64" else torch.float32
    model = TrainModel(args.model, dtype, args.capacity_factor)
    tokens = load_tokens(args.tokens, model.embed.shape[0])
    os.makedirs(args.out, exist_ok=True)
    params = [p for _, p in model.trainable()]
    opt = AdamW(params, args.beta1, args.beta2, args.eps, args.weight_decay)
    settings = {k: getattr(args, k) for k in ("steps", "lr", "warmup", "min_lr_ratio", "weight_decay", "beta1",
                                               "beta2", "eps", "clip", "aux_coef", "z_coef",
                                               "capacity_factor", "dtype")}
    settings.update({"architecture": model.cfg.arch, "batch": list(tokens.shape),
                     "trainable": [n for n, _ in model.trainable()],
                     "frozen": sorted(n for n in model.raw if n not in dict(model.trainable())
                                      and n != model.tied_alias)})
    trace = []
    for step in range(0, args.steps + 1):
        for p in params:
            p.grad = None
        losses, logits, stats = compute_loss(model, tokens, args.aux_coef, args.z_coef)
        if step == args.steps and step > 0:  # loss after the last update (no gradient needed)
            final = floats(losses)
            break
        losses["total"].backward()
        for p in params:  # an expert no token reached: gradient 0 (decay and moments still move)
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        if step == 0:
            np.save(os.path.join(args.out, "logits.npy"), logits.detach().to(torch.float32).numpy())
            with open(os.path.join(args.out, "loss.json"), "w") as f:
                json.dump({**floats(losses), "per_layer": per_layer_json(stats), "num_moe_layers": len(stats),
                           **settings}, f, indent=1)
            safetensors_np.write_file(os.path.join(args.out, "grads.safetensors"),
                                      checkpoint_arrays(model, grad_of, np.zeros_like))
            final = floats(losses)
            if args.steps == 0:
                break
        s = step + 1
        lr = lr_at(s, args.steps, args.lr, args.warmup, args.min_lr_ratio)
        norm, scale = clip_grads(params, args.clip)
        opt.step(lr)
        trace.append({"step": s, "lr": lr, "loss_before_update": floats(losses),
                      "grad_norm_before_clip": norm, "clip_scale": scale})
        print(f"step {s:3d} lr {lr:.3e} loss {float(losses['total']):.6f} (ce {float(losses['ce']):.6f} "
              f"aux {float(losses['aux']):.6f} z {float(losses['z']):.6f}) grad_norm {norm:.4f}", file=sys.stderr)
    with open(os.path.join(args.out, "trace.json"), "w") as f:
        json.dump({"settings": settings, "steps": trace, "final_loss": final}, f, indent=1)
    safetensors_np.write_file(os.path.join(args.out, "final_weights.safetensors"),
                              checkpoint_arrays(model, lambda leaf: leaf, lambda raw: raw))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="checkpoint directory (config.json + safetensors)")
    ap.add_argument("--tokens", required=True, help="integer .npy [B, S]")
    ap.add_argument("--out", required=True, help="fixture directory (created)")
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--lr", type=float, default=3e-3)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--weight-decay", type=float, default=0.1)
    ap.add_argument("--beta1", type=float, default=0.9)
    ap.add_argument("--beta2", type=float, default=0.95)
    ap.add_argument("--eps", type=float, default=1e-8)
    ap.add_argument("--clip", type=float, default=1.0, help="global grad-norm clip (<= 0: off)")
    ap.add_argument("--aux-coef", type=float, default=0.01)
    ap.add_argument("--z-coef", type=float, default=0.001)
    ap.add_argument("--capacity-factor", type=float, default=0.0, help="0 = dropless")
    ap.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = ap.parse_args(argv)
    if args.steps < 0 or args.warmup < 0 or args.capacity_factor < 0:
        ap.error("--steps, --warmup and --capacity-factor must be >= 0")
    torch.set_num_threads(1)  # deterministic reductions; the test machine is small anyway
    try:
        train(args)
    except hf.Unsupported as e:
        print(f"train_reference: unsupported: {e}", file=sys.stderr)
        return 2
    except (KeyError, ValueError, FileNotFoundError, OSError) as e:
        print(f"train_reference: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
