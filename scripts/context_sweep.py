#!/usr/bin/env python3
"""Prefill and decode speed against the context length on a real model (issue 26, point 3).

    python3 scripts/context_sweep.py DIR [--contexts 128,512,2048] [--threads 2] [--rounds 3]
                                         [--new-tokens 32] [--hybrid]

DIR is a Hugging Face checkpoint (`scripts/real_model.py DIR` makes SmolLM2-135M-Instruct).
For each context length N, the prompt is the first N tokens of real source code read from this
machine's packages (the sources of `real_model_check.py`, concatenated), decoded back to text;
`multipl-moe generate` (greedy, `--ignore-eos`) and transformers (eager and sdpa attention: a
prefill forward keeping the last logits, then greedy KV-cache steps) run on it in alternating
rounds on the same threads; medians. Decode runs over the context N .. N + new tokens.

Prints one Markdown table: prefill and decode tokens/s of each, ours / the faster of
transformers' two, and each decode rate against its own rate at the shortest context (goal
≥ 0.7 at 2048), and the bytes our decode reads per second — every weight once (the file's
f32 bytes) plus the KV cache of the context, per token — against the host's read bandwidth
(`multipl-moe host`, printed first; issue 26, point 4). With `--hybrid`, the model is also upcycled (`multipl-moe upcycle`, paper
preset, every layer) into a temporary directory and our decode time per token of the hybrid is
given against the dense model's at each length (goal ≤ 1.5).

Needs torch, transformers and `cargo build --release`.
"""
import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_user_path import bench_env, host_line, ours, theirs, upcycled  # noqa: E402  (the same runs)
from real_model_check import SOURCES, read_source  # noqa: E402  (the same real code)


def prompts(model_dir, contexts):
    """{N: text} whose tokenisation is N tokens long (or within a few tokens of it)."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(os.path.join(model_dir, "tokenizer.json"))
    text = "\n".join(code for _, code in (read_source(SOURCES[lang]) for lang in SOURCES)
                     if code)
    ids = tok.encode(text, add_special_tokens=False).ids
    if len(ids) < max(contexts):
        sys.exit(f"only {len(ids)} tokens of real code found, {max(contexts)} asked for")
    return {n: tok.decode(ids[:n]) for n in contexts}


def bytes_per_token(model, context):
    """What one decode step reads at least: every weight once (f32 as stored; the tied
    embedding is the LM head) and the KV cache of `context` tokens."""
    import json
    weights = sum(os.path.getsize(os.path.join(model, f)) for f in os.listdir(model)
                  if f.endswith(".safetensors"))
    cfg = json.load(open(os.path.join(model, "config.json")))
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // cfg["num_attention_heads"]
    kv = context * cfg["num_hidden_layers"] * 2 * cfg["num_key_value_heads"] * head_dim * 4
    return weights + kv


def read_bandwidth(line):
    """GB/s from `multipl-moe host`'s line."""
    return float(line.split("read bandwidth ")[1].split()[0])


def median_rate(rows, phase, count):
    return rows[0][count] / statistics.median(r[phase] for r in rows)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--contexts", default="128,512,2048")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--hybrid", action="store_true")
    args = ap.parse_args()
    env = bench_env(args.threads)
    contexts = [int(c) for c in args.contexts.split(",")]
    texts = prompts(args.dir, contexts)
    with tempfile.TemporaryDirectory() as tmp:
        hybrid = upcycled(args.dir, env, tmp) if args.hybrid else None
        results = {}
        for n in contexts:
            rows = {"ours": [], "eager": [], "sdpa": [], "hybrid": []}
            for _ in range(args.rounds):
                rows["ours"].append(ours(args.dir, env, args.new_tokens, texts[n]))
                if hybrid:
                    rows["hybrid"].append(ours(hybrid, env, args.new_tokens, texts[n]))
                for attn in ("eager", "sdpa"):
                    rows[attn].append(theirs(env, args.threads, args.new_tokens, args.dir,
                                             texts[n], attn))
            results[n] = {who: (median_rate(r, "prefill", "prompt"),
                                median_rate(r, "decode", "steps"), r[0]["prompt"])
                          for who, r in rows.items() if r}
    host = host_line(env, args.threads)
    bandwidth = read_bandwidth(host)
    print(host, flush=True)
    print(f"### context sweep: {args.threads} threads, {args.new_tokens} new tokens, medians of "
          f"{args.rounds} alternating rounds\n")
    head = ("| context | ours prefill tok/s | eager | sdpa | prefill ours / best | ours decode "
            "tok/s | eager | sdpa | decode ours / best | ours decode / at shortest | "
            "transformers decode / at shortest | ours decode GB/s read | of read bandwidth |")
    if hybrid:
        head += " hybrid decode tok/s | hybrid / dense time per token |"
    print(head)
    print("|" + "---:|" * (head.count("|") - 1))
    first = results[contexts[0]]
    for n in contexts:
        r = results[n]
        best_pre = max(r["eager"][0], r["sdpa"][0])
        best_dec = max(r["eager"][1], r["sdpa"][1])
        first_best = max(first["eager"][1], first["sdpa"][1])
        line = (f"| {r['ours'][2]} | {r['ours'][0]:.0f} | {r['eager'][0]:.0f} | "
                f"{r['sdpa'][0]:.0f} | **{r['ours'][0] / best_pre:.2f}** | {r['ours'][1]:.1f} | "
                f"{r['eager'][1]:.1f} | {r['sdpa'][1]:.1f} | **{r['ours'][1] / best_dec:.2f}** | "
                f"{r['ours'][1] / first['ours'][1]:.2f} | {best_dec / first_best:.2f} |")
        read = r["ours"][1] * bytes_per_token(args.dir, r["ours"][2]) / 1e9
        line += f" {read:.1f} | {100 * read / bandwidth:.0f} % |"
        if hybrid:
            line += f" {r['hybrid'][1]:.1f} | **{r['ours'][1] / r['hybrid'][1]:.2f}** |"
        print(line)
    print()


if __name__ == "__main__":
    main()
