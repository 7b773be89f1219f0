#!/usr/bin/python3
"""PyTorch baseline for the trainer's benchmark (issue 7): a small MoE LM trained on the CPU.

Reproduces the model and setting of /work/shared/reference/machine.md, section "PyTorch 1.13
(Debian) training a small MoE LM on this machine (the trainer's baseline)":

  * pre-norm decoder: x += attn(rmsnorm(x)); x += moe(rmsnorm(x)); final RMSNorm; untied LM head
  * causal multi-head attention, RoPE (rotate-half style), scores by matmul + softmax
    (additive causal mask), no biases anywhere
  * an MoE FFN in every layer: softmax router, top-2 renormalised to sum 1, 8 SwiGLU experts
    (w2(silu(w1 x) * w3 x)) run on their tokens via index_select and summed back with index_add_
  * load-balancing loss 0.01 * E * sum_i D_i P_i (D_i: fraction of the token-expert assignments
    sent to expert i, P_i: mean router probability of expert i), averaged over layers
  * AdamW (lr 3e-4, torch defaults otherwise), fp32, batch 8 x seq 256, random tokens
    (torch.randint, seeded), next-token cross-entropy

Configs (vocab / d / layers / heads / experts / expert FFN):
  T1 = 4096 / 256 / 6 / 8 / 8 / 512     machine.md: 22.6 M total / 7.4 M active non-emb
  T2 = 8192 / 512 / 8 / 8 / 8 / 1024    machine.md: 117.5 M total / 37.8 M active non-emb
"total" counts everything (embedding and untied LM head included); "active non-embedding"
drops the input embedding and the 6 of 8 experts a token does not use, but keeps the LM head.
gflops_6N = 6 * active_nonemb * tokens/s, the convention of machine.md's GFLOP/s column.

Run it with Debian's PyTorch 1.13 (/usr/bin/python3). The script sets nothing about the
environment itself; the caller sets it. machine.md's best (tuned) environment is

  env -u OPENBLAS_CORETYPE MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=68719476736 \\
      OMP_WAIT_POLICY=passive /usr/bin/python3 bench/pytorch_train_baseline.py --config T1 --threads 2

OPENBLAS_CORETYPE must be unset (the machine's Haswell setting halves OpenBLAS's sgemm
throughput; OpenBLAS reads it at load time). The malloc settings stop glibc returning freed
memory to the OS (fresh pages cost ~15 us per 4 KiB on the VM, re-faulted every step); passive
OpenMP waiting stops spinning OpenMP threads fighting OpenBLAS threads on 2 cores. With default
settings PyTorch is 2-3x slower: compare the C++ trainer against the tuned figures.

  /usr/bin/python3 bench/pytorch_train_baseline.py --config T2 --threads 2 --steps 10 --json out.json

Prints a table and optionally writes JSON: config, threads, params_total, params_active_nonemb,
tokens_per_s_median (batch * seq / median step time), step_ms_median, step_ms_all, gflops_6N
(plus batch, seq, torch version and the relevant environment variables as seen).
"""

import argparse
import json
import math
import os
import statistics
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

CONFIGS = {
    # vocab, d_model, layers, heads, experts, expert FFN, top-k
    "T1": dict(vocab=4096, d=256, layers=6, heads=8, experts=8, ffn=512, top_k=2),
    "T2": dict(vocab=8192, d=512, layers=8, heads=8, experts=8, ffn=1024, top_k=2),
}
# machine.md's table: params total / active non-embedding (millions), tokens/s 1T / 2T.
REFERENCE = {
    "T1": dict(total_m=22.6, active_m=7.4, tps_1t=2264, tps_2t=2277),
    "T2": dict(total_m=117.5, active_m=37.8, tps_1t=570, tps_2t=743),
}
AUX_LOSS_COEF = 0.01
ENV_VARS = ("OPENBLAS_CORETYPE", "MALLOC_MMAP_MAX_", "MALLOC_TRIM_THRESHOLD_", "OMP_WAIT_POLICY",
            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class RMSNorm(nn.Module):
    def __init__(self, d, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight


def rope_tables(seq, head_dim, base=10000.0):
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
    freqs = torch.outer(torch.arange(seq, dtype=torch.float32), inv_freq)  # (seq, hd/2)
    emb = torch.cat([freqs, freqs], dim=-1)  # (seq, hd)
    return emb.cos(), emb.sin()


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    return x * cos + rotate_half(x) * sin


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.head_dim = d // heads
        self.wq = nn.Linear(d, d, bias=False)
        self.wk = nn.Linear(d, d, bias=False)
        self.wv = nn.Linear(d, d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)

    def forward(self, x, cos, sin, mask):
        b, s, d = x.shape
        h, hd = self.heads, self.head_dim
        q = self.wq(x).view(b, s, h, hd).transpose(1, 2)  # (b, h, s, hd)
        k = self.wk(x).view(b, s, h, hd).transpose(1, 2)
        v = self.wv(x).view(b, s, h, hd).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k = apply_rope(k, cos, sin)
        scores = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(hd)) + mask
        probs = torch.softmax(scores, dim=-1)
        out = torch.matmul(probs, v).transpose(1, 2).reshape(b, s, d)
        return self.wo(out)


class Expert(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.w1 = nn.Linear(d, ffn, bias=False)  # gate
        self.w3 = nn.Linear(d, ffn, bias=False)  # up
        self.w2 = nn.Linear(ffn, d, bias=False)  # down

    def forward(self, x):
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class MoE(nn.Module):
    def __init__(self, d, ffn, experts, top_k):
        super().__init__()
        self.num_experts = experts
        self.top_k = top_k
        self.router = nn.Linear(d, experts, bias=False)
        self.experts = nn.ModuleList([Expert(d, ffn) for _ in range(experts)])

    def forward(self, x):
        b, s, d = x.shape
        xf = x.reshape(-1, d)
        n = xf.shape[0]
        probs = torch.softmax(self.router(xf), dim=-1)  # (n, E)
        topw, topi = probs.topk(self.top_k, dim=-1)  # (n, k)
        topw = topw / topw.sum(dim=-1, keepdim=True)

        # Load-balancing loss: E * sum_i D_i P_i (D from the hard top-k choice, no gradient).
        counts = torch.bincount(topi.reshape(-1), minlength=self.num_experts).to(xf.dtype)
        frac = counts / (n * self.top_k)
        aux = self.num_experts * torch.sum(frac * probs.mean(dim=0))

        out = torch.zeros_like(xf)
        flat_e = topi.reshape(-1)
        flat_w = topw.reshape(-1)
        token_of = torch.arange(n, device=x.device).repeat_interleave(self.top_k)
        order = torch.argsort(flat_e)
        sorted_tok = token_of[order]
        sorted_w = flat_w[order]
        bounds = torch.cumsum(counts.to(torch.long), 0).tolist()
        start = 0
        for e, end in enumerate(bounds):
            if end > start:
                tok = sorted_tok[start:end]
                y = self.experts[e](xf.index_select(0, tok))
                out.index_add_(0, tok, y * sorted_w[start:end].unsqueeze(1))
            start = end
        return out.view(b, s, d), aux


class Block(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attn_norm = RMSNorm(c["d"])
        self.attn = Attention(c["d"], c["heads"])
        self.moe_norm = RMSNorm(c["d"])
        self.moe = MoE(c["d"], c["ffn"], c["experts"], c["top_k"])

    def forward(self, x, cos, sin, mask):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask)
        y, aux = self.moe(self.moe_norm(x))
        return x + y, aux


class MoELM(nn.Module):
    def __init__(self, c, seq):
        super().__init__()
        self.c = c
        self.embed = nn.Embedding(c["vocab"], c["d"])
        self.blocks = nn.ModuleList([Block(c) for _ in range(c["layers"])])
        self.norm = RMSNorm(c["d"])
        self.lm_head = nn.Linear(c["d"], c["vocab"], bias=False)  # untied
        cos, sin = rope_tables(seq, c["d"] // c["heads"])
        self.register_buffer("cos", cos, persistent=False)
        self.register_buffer("sin", sin, persistent=False)
        mask = torch.full((seq, seq), float("-inf")).triu(1)
        self.register_buffer("mask", mask, persistent=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, tokens, targets):
        s = tokens.shape[1]
        cos, sin, mask = self.cos[:s], self.sin[:s], self.mask[:s, :s]
        x = self.embed(tokens)
        aux_total = 0.0
        for blk in self.blocks:
            x, aux = blk(x, cos, sin, mask)
            aux_total = aux_total + aux
        logits = self.lm_head(self.norm(x))
        ce = F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))
        aux_mean = aux_total / len(self.blocks)
        return ce + AUX_LOSS_COEF * aux_mean, ce, aux_mean


def param_counts(model):
    c = model.c
    total = sum(p.numel() for p in model.parameters())
    emb = model.embed.weight.numel()
    expert = sum(p.numel() for p in model.blocks[0].moe.experts[0].parameters())
    inactive = c["layers"] * (c["experts"] - c["top_k"]) * expert
    return total, total - emb - inactive


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="T1")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch.set_num_threads (default: leave torch's choice)")
    ap.add_argument("--steps", type=int, default=10, help="timed steps")
    ap.add_argument("--warmup-steps", type=int, default=2, help="untimed steps first")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args()
    if args.steps < 1 or args.warmup_steps < 0:
        ap.error("--steps must be >= 1 and --warmup-steps >= 0")

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    torch.manual_seed(args.seed)

    c = CONFIGS[args.config]
    model = MoELM(c, args.seq)
    model.train()
    total, active = param_counts(model)
    ref = REFERENCE[args.config]
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr)

    gen = torch.Generator().manual_seed(args.seed + 1)
    data = torch.randint(0, c["vocab"], (args.batch, args.seq + 1), generator=gen)
    tokens, targets = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    tokens_per_step = args.batch * args.seq

    env = {k: os.environ.get(k) for k in ENV_VARS}
    print(f"torch {torch.__version__}, config {args.config} "
          f"(vocab {c['vocab']}, d {c['d']}, layers {c['layers']}, heads {c['heads']}, "
          f"experts {c['experts']} top-{c['top_k']}, expert FFN {c['ffn']}), "
          f"batch {args.batch} x seq {args.seq}, threads {threads}")
    print("env: " + ", ".join(f"{k}={'(unset)' if v is None else v}" for k, v in env.items()))
    if env["OPENBLAS_CORETYPE"] is not None:
        print("note: OPENBLAS_CORETYPE is set; machine.md's tuned figures have it unset",
              file=sys.stderr)
    match = (round(total / 1e6, 1) == ref["total_m"] and round(active / 1e6, 1) == ref["active_m"])
    print(f"params: total {total} ({total / 1e6:.1f} M), active non-emb {active} "
          f"({active / 1e6:.1f} M); machine.md {ref['total_m']} M / {ref['active_m']} M: "
          f"{'match' if match else 'MISMATCH'}")

    def step():
        opt.zero_grad(set_to_none=True)
        loss, ce, aux = model(tokens, targets)
        loss.backward()
        opt.step()
        return loss.item(), ce.item(), aux.item()

    for i in range(args.warmup_steps):
        t0 = time.perf_counter()
        loss, ce, aux = step()
        print(f"warmup {i}: {(time.perf_counter() - t0) * 1e3:8.1f} ms  loss {loss:.4f} "
              f"(ce {ce:.4f}, aux {aux:.4f})")
    step_ms = []
    for i in range(args.steps):
        t0 = time.perf_counter()
        loss, ce, aux = step()
        step_ms.append((time.perf_counter() - t0) * 1e3)
        print(f"step {i}: {step_ms[-1]:8.1f} ms  loss {loss:.4f} (ce {ce:.4f}, aux {aux:.4f})")

    med = statistics.median(step_ms)
    tps = tokens_per_step / (med / 1e3)
    gflops = 6.0 * active * tps / 1e9
    ref_tps = ref["tps_1t"] if threads == 1 else ref["tps_2t"] if threads == 2 else None
    print()
    print("| config | threads | params total / active non-emb | step ms (median, min-max) "
          "| tokens/s | GFLOP/s (6N) | machine.md tokens/s |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {args.config} | {threads} | {total / 1e6:.1f} M / {active / 1e6:.1f} M "
          f"| {med:.1f} ({min(step_ms):.1f}-{max(step_ms):.1f}) | {tps:.0f} | {gflops:.1f} "
          f"| {ref_tps if ref_tps is not None else '-'} |")

    if args.json:
        result = dict(config=args.config, threads=threads, params_total=total,
                      params_active_nonemb=active, tokens_per_s_median=tps, step_ms_median=med,
                      step_ms_all=step_ms, gflops_6N=gflops, batch=args.batch, seq=args.seq,
                      torch=torch.__version__, env=env)
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")


if __name__ == "__main__":
    main()
