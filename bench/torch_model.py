#!/usr/bin/env python3
"""The whole hybrid model (docs/FORMAT.md) in PyTorch eager, trained for comparison with ours.

    cargo bench --bench model      # runs this script itself when python3 imports torch
    python3 bench/torch_model.py target/model_bench/qwen05b-2l --threads 2 --steps 3

DIR is what `benches/model.rs` writes: the model in our export format (`DIR/model`: config.json +
model.safetensors, loadable by `multipl-moe`) and `DIR/check.safetensors` (the token batch, our
next-token and balance losses on it, and our logits at a few positions, all from the same
initial weights). The backbone is transformers' class of the export's `model_type` (Qwen2,
Llama or Mistral) built from config.json (its
default attention, SDPA); every FFN slot is replaced by the hybrid MoE of FORMAT.md, written the
way a PyTorch user would (per-expert loops with index lists, as in HF's Qwen2-MoE), and the
file's tensors are loaded into it by their keys. The script checks that its logits and losses
equal ours, then times training steps: forward, L = CE + alpha * L_bal (SPEC §4), backward and
AdamW (weight decay 0.1) on the SPEC §5 trainable set (routed token experts, segment experts,
routers; the rest frozen), at the same batch and thread count. It prints one line
`torch eager train step: S s` (the median step). Exits with an error when the model differs.
"""
import argparse
import json
import os

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import load_file
from timing import median_seconds


class Expert(nn.Module):
    """down(silu(gate(x)) * up(x)), no biases."""

    def __init__(self, d, f):
        super().__init__()
        self.gate_proj = nn.Linear(d, f, bias=False)
        self.up_proj = nn.Linear(d, f, bias=False)
        self.down_proj = nn.Linear(f, d, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class HybridMoe(nn.Module):
    """One hybrid FFN slot of docs/FORMAT.md (token top-k with a shared expert and the gate
    normalisation of SPEC §2, plus paper-mode segment expert choice of SPEC §3)."""

    def __init__(self, d, f, moe):
        super().__init__()
        tok, seg = moe["token"], moe["segment"]
        if seg.get("routing", "Paper") != "Paper" or seg.get("max_experts_per_segment") is not None:
            raise SystemExit("torch_model.py implements paper-mode routing without a cap only")
        self.top_k, self.shared = tok["top_k"], tok["shared_expert"]
        self.window, self.capacity = seg["window"], seg["capacity_factor"]
        self.max_pool = seg["pooling"] == "Max"
        self.gamma = 1.0 / self.window if seg["gate_scale"] == "InverseWindow" else 1.0
        self.lam = (moe["lambda_token"], moe["lambda_segment"])
        self.shared_expert = Expert(d, f)
        self.token_router = nn.Linear(d, tok["num_experts"], bias=False)
        self.token_experts = nn.ModuleList(Expert(d, f) for _ in range(tok["num_experts"] - 1))
        self.segment_router = nn.Linear(d, seg["num_experts"], bias=False)
        self.segment_experts = nn.ModuleList(Expert(d, f) for _ in range(seg["num_experts"]))
        self.balance = None

    def token_level(self, x):
        s = torch.softmax(self.token_router(x), dim=-1)
        routed = s.clone()
        routed[:, self.shared] = -1.0
        top_p, top_i = routed.detach().topk(self.top_k - 1, dim=-1)
        top_p = s.gather(1, top_i)
        s_shared = s[:, self.shared:self.shared + 1]
        norm = s_shared + top_p.sum(-1, keepdim=True)
        h = self.shared_expert(x) * (s_shared / norm)
        for e, expert in enumerate(self.token_experts):
            rid = e + (1 if e >= self.shared else 0)
            rows, slot = (top_i == rid).nonzero(as_tuple=True)
            if rows.numel() == 0:
                continue
            gate = (top_p[rows, slot] / norm[rows, 0]).unsqueeze(1)
            h = h.index_add(0, rows, expert(x[rows]) * gate)
        # L_bal (balance.rs): E_r * sum_i f_i * P_i over the routed experts.
        mask = torch.ones(s.shape[1], dtype=torch.bool)
        mask[self.shared] = False
        p_routed = s[:, mask] / s[:, mask].sum(-1, keepdim=True)
        ids = torch.arange(s.shape[1])[mask]
        f_i = (top_i.unsqueeze(-1) == ids).float().sum((0, 1)) / (x.shape[0] * (self.top_k - 1))
        self.balance = ids.numel() * (f_i * p_routed.mean(0)).sum()
        return h

    def segment_level(self, u):
        b, t, d = u.shape
        a = self.window
        p = -(-t // a)
        pad = p * a - t
        up = F.pad(u, (0, 0, 0, pad)).reshape(b * p, a, d)
        counts = torch.tensor([min(a, t - i * a) for i in range(p)], dtype=u.dtype).repeat(b)
        if self.max_pool:
            real = (torch.arange(a).unsqueeze(0) < counts.unsqueeze(1)).unsqueeze(-1)
            pooled = up.masked_fill(~real, float("-inf")).amax(1)
        else:
            pooled = up.sum(1) / counts.unsqueeze(1)
        S = torch.softmax(self.segment_router(pooled), dim=-1)
        v, n_s = S.shape
        r = max(1, min(v, int(v * self.capacity // n_s)))
        y = torch.zeros_like(up)
        for e, expert in enumerate(self.segment_experts):
            dv, iv = S[:, e].topk(r)
            out = expert(up[iv].reshape(r * a, d)).reshape(r, a, d)
            y = y.index_add(0, iv, out * (dv * self.gamma).reshape(r, 1, 1))
        return y.reshape(b, p * a, d)[:, :t]

    def forward(self, u):
        b, t, d = u.shape
        h_tok = self.token_level(u.reshape(b * t, d)).reshape(b, t, d)
        return self.lam[0] * h_tok + self.lam[1] * self.segment_level(u)


def build(model_dir):
    from transformers import AutoConfig, AutoModelForCausalLM

    with open(os.path.join(model_dir, "config.json")) as f:
        cfg = json.load(f)
    moe = cfg.pop("multipl_moe", None)
    if moe is None or moe.get("hybrid_layers") is not None:
        raise SystemExit("torch_model.py expects a model whose every layer is hybrid")
    # The export names its base architecture (qwen2, llama or mistral; docs/FORMAT.md).
    config = AutoConfig.for_model(cfg.pop("model_type", "qwen2"), **cfg)
    model = AutoModelForCausalLM.from_config(config)
    for layer in model.model.layers:
        layer.mlp = HybridMoe(config.hidden_size, config.intermediate_size, moe)
    state = load_file(os.path.join(model_dir, "model.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (k == "lm_head.weight" and config.tie_word_embeddings)]
    if missing or unexpected:
        raise SystemExit(f"keys differ from the export: missing {missing[:5]}, unexpected {unexpected[:5]}")
    model.tie_weights()
    for name, param in model.named_parameters():
        param.requires_grad_(any(k in name for k in (
            "token_experts", "segment_experts", "token_router", "segment_router")))
    return model, moe["balance_coef"]


def losses(model, tokens, alpha):
    inputs, targets = tokens[:, :-1], tokens[:, 1:]
    logits = model(input_ids=inputs).logits
    ce = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
    moes = [layer.mlp for layer in model.model.layers]
    balance = torch.stack([m.balance for m in moes]).mean()
    return logits, ce, balance, ce + alpha * balance


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model, alpha = build(os.path.join(args.dir, "model"))
    check = load_file(os.path.join(args.dir, "check.safetensors"))
    tokens = check["tokens"].long()
    with torch.no_grad():
        logits, ce, balance, _ = losses(model, tokens, alpha)
    positions = check["positions"].long()
    err = (logits[0, positions] - check["logits"]).abs().max().item()
    scale = check["logits"].abs().max().item()
    d_ce = abs(ce.item() - check["ce"].item())
    d_bal = abs(balance.item() - check["balance"].item())
    print(f"max |torch - ours| logits = {err:.3e} (scale {scale:.3e}); "
          f"ce {ce.item():.6f} vs {check['ce'].item():.6f}; balance {balance.item():.6f} vs {check['balance'].item():.6f}")
    if err > 1e-3 * max(scale, 1.0) or d_ce > 1e-4 * max(ce.item(), 1.0) or d_bal > 1e-4:
        raise SystemExit("the models differ; not the same model")
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5,
                              weight_decay=0.1)

    def step():
        optim.zero_grad(set_to_none=True)
        losses(model, tokens, alpha)[3].backward()
        optim.step()

    print(f"torch eager train step: {median_seconds(step, args.steps):.3f} s")


if __name__ == "__main__":
    main()
