#!/usr/bin/env python3
"""The hybrid MoE layer of SPEC §2–§4 in PyTorch eager, for comparison with our Rust bench.

    MOE_BENCH_DUMP=target/moe_bench/layer.safetensors cargo bench --bench moe_layer
    python3 bench/torch_moe_layer.py target/moe_bench/layer.safetensors --threads 2

It loads the weights, input and output our layer wrote (burn's [in, out] layouts), checks
that its own output matches ours, then times forward + backward at the same shape and thread
count, with the same HF-style per-expert loop a PyTorch user would write (paper preset: mean
pooling, γ = 1, λ = (0.7, 0.3), shared expert 0, K = 2, c = 1, a = 64).
"""
import argparse

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from timing import median_seconds


def swiglu(x, gate_up, down):
    f = down.shape[0]
    h = x @ gate_up
    return (F.silu(h[..., :f]) * h[..., f:]) @ down


def layer(w, u, top_k=2, shared=0, window=64, cap=1.0, lam=(0.7, 0.3)):
    b, t, d = u.shape
    x = u.reshape(b * t, d)
    # Token level (SPEC §2): softmax over all, top-(K-1) routed, divide by the kept sum.
    s = torch.softmax(x @ w["token_router"], dim=-1)
    routed = s.clone()
    routed[:, shared] = -1.0
    top_p, top_i = routed.topk(top_k - 1, dim=-1)
    norm = s[:, shared:shared + 1] + top_p.sum(-1, keepdim=True)
    shared_ffn = swiglu(x, torch.cat([w["shared_gate"], w["shared_up"]], 1), w["shared_down"])
    h_tok = shared_ffn * (s[:, shared:shared + 1] / norm)
    for e in range(w["token_gate_up"].shape[0]):
        rid = e + (1 if e >= shared else 0)
        rows, slot = (top_i == rid).nonzero(as_tuple=True)
        if rows.numel() == 0:
            continue
        y = swiglu(x[rows], w["token_gate_up"][e], w["token_down"][e])
        h_tok = h_tok.index_add(0, rows, y * (top_p[rows, slot] / norm[rows, 0]).unsqueeze(1))
    # Segment level (SPEC §3): mean-pool windows, expert choice over the batch's segments.
    p = -(-t // window)
    pad = p * window - t
    up = F.pad(u, (0, 0, 0, pad)).reshape(b * p, window, d)
    counts = torch.tensor([min(window, t - i * window) for i in range(p)], dtype=u.dtype).repeat(b)
    pooled = up.sum(1) / counts.unsqueeze(1)
    S = torch.softmax(pooled @ w["segment_router"], dim=-1)
    v, n_s = S.shape
    r = max(1, min(v, int(v * cap // n_s)))
    y = torch.zeros_like(up)
    for e in range(n_s):
        dv, iv = S[:, e].topk(r)
        out = swiglu(up[iv].reshape(r * window, d), w["segment_gate_up"][e], w["segment_down"][e])
        y = y.index_add(0, iv, out.reshape(r, window, d) * dv.reshape(r, 1, 1))
    y_seg = y.reshape(b, p * window, d)[:, :t]
    return lam[0] * h_tok.reshape(b, t, d) + lam[1] * y_seg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dump")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    w = load_file(args.dump)
    u, ours = w.pop("u"), w.pop("out")
    with torch.no_grad():
        out = layer(w, u)
    err = (out - ours).abs().max().item()
    scale = ours.abs().max().item()
    print(f"max |torch - ours| = {err:.3e} (output scale {scale:.3e})")
    if err > 1e-4 * max(scale, 1.0):
        raise SystemExit(f"outputs differ: {err:.3e} > 1e-4 x scale; not the same layer")
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    uu = u.clone().requires_grad_(True)

    def step():
        layer(params, uu).sum().backward()

    med = median_seconds(step, args.iters)
    n = u.shape[0] * u.shape[1]
    print(f"torch eager hybrid layer fwd+bwd: {med:.3f} s, {n / med:.0f} tokens/s, {args.threads} threads")


if __name__ == "__main__":
    main()
