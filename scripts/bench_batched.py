#!/usr/bin/env python3
"""Batched sampling throughput on a real model (issue 25, point 7).

    python3 scripts/bench_batched.py DIR [--samples 1,8,20] [--new-tokens 64] [--threads 2]
                                         [--rounds 2] [--hybrid]

DIR is a Hugging Face checkpoint (`scripts/real_model.py DIR` makes SmolLM2-135M-Instruct).
For each n, n completions of one HumanEval-style prompt are sampled (temperature 0.2, top-p
0.95, as MultiPL-E's pass@1 runs; EOS ignored, so every completion has exactly --new-tokens
tokens) by

- ours, one at a time: `multipl-moe generate --samples n --batch-size 1`;
- ours, batched: `multipl-moe generate --samples n --batch-size n` (one shared prefill, the n
  rows decoded together);
- transformers, batched: `generate(input_ids.repeat(n, 1), do_sample=True, ...,
  min_new_tokens=max_new_tokens)` in f32 with sdpa attention, after one warm-up call;

in alternating rounds on the same threads; medians of the wall time without model loading.
Prints one Markdown table of completions per second: batched / one at a time (goal ≥ 5 at
n = 20) and ours batched / transformers batched (goal > 1). With `--hybrid` the model is also
upcycled (`multipl-moe upcycle`, paper preset) and our batched rate is given for it.

Needs torch, transformers and `cargo build --release`.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_user_path import BIN, bench_env, host_line, upcycled  # noqa: E402

# A HumanEval-style prompt written for this benchmark (not a benchmark problem).
PROMPT = '''from typing import List


def running_maximum(numbers: List[int]) -> List[int]:
    """Return a list whose i-th element is the largest of numbers[0..=i].
    >>> running_maximum([1, 3, 2, 5, 4])
    [1, 3, 3, 5, 5]
    >>> running_maximum([])
    []
    """
'''

TORCH_RUN = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
path, threads, n, new_tokens, rounds, prompt = (sys.argv[1], int(sys.argv[2]), int(sys.argv[3]),
                                                int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
torch.set_num_threads(threads)
torch.manual_seed(0)
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                             attn_implementation="sdpa").eval()
ids = tok(prompt, return_tensors="pt").input_ids.repeat(n, 1)
mask = torch.ones_like(ids)
kw = dict(do_sample=True, temperature=0.2, top_p=0.95, pad_token_id=tok.eos_token_id)
with torch.inference_mode():
    model.generate(ids, attention_mask=mask, max_new_tokens=2, **kw)
    times = []
    for _ in range(rounds):
        t = time.perf_counter()
        out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens,
                             min_new_tokens=new_tokens, **kw)
        times.append(time.perf_counter() - t)
        assert out.shape == (n, ids.shape[1] + new_tokens), out.shape
print(json.dumps(times))
"""


def ours(model, env, n, batch, new_tokens):
    """Seconds `multipl-moe generate` takes for n samples in batches of `batch`, load excluded."""
    cmd = [BIN, "generate", "--model", model, "--prompt", PROMPT, "--ignore-eos",
           "--max-new-tokens", str(new_tokens), "--temperature", "0.2", "--top-p", "0.95",
           "--samples", str(n), "--batch-size", str(batch)]
    err = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stderr
    if n == 1:
        m = re.search(r"prefill: \d+ tokens in ([0-9.]+) s .*decode: (\d+) tokens in ([0-9.]+) s",
                      err)
        assert int(m.group(2)) == new_tokens - 1, err
        return float(m.group(1)) + float(m.group(3))
    m = re.search(r"samples: (\d+) completions, (\d+) tokens in ([0-9.]+) s", err)
    assert int(m.group(2)) == n * new_tokens, err
    return float(m.group(3))


def theirs(model, env, threads, n, new_tokens, rounds):
    out = subprocess.run([sys.executable, "-c", TORCH_RUN, model, str(threads), str(n),
                          str(new_tokens), str(rounds), PROMPT], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--samples", default="1,8,20")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--hybrid", action="store_true")
    args = ap.parse_args()
    env = bench_env(args.threads)
    counts = [int(s) for s in args.samples.split(",")]
    print(host_line(env, args.threads), flush=True)
    print(f"{args.threads} threads; {args.new_tokens} new tokens per "
          f"completion; medians of {args.rounds} rounds", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        hybrid = upcycled(args.dir, env, tmp) if args.hybrid else None
        rows = []
        for n in counts:
            t = {"one": [], "batched": [], "torch": [], "hybrid": []}
            for _ in range(args.rounds):
                t["one"].append(ours(args.dir, env, n, 1, args.new_tokens))
                t["batched"].append(ours(args.dir, env, n, n, args.new_tokens))
                if hybrid:
                    t["hybrid"].append(ours(hybrid, env, n, n, args.new_tokens))
            t["torch"] = theirs(args.dir, env, args.threads, n, args.new_tokens, args.rounds)
            rate = {k: n / statistics.median(v) for k, v in t.items() if v}
            rows.append((n, rate))
            print(f"n={n}: " + ", ".join(f"{k} {v:.3f}/s" for k, v in rate.items()),
                  flush=True)
    head = ("| n | ours one at a time | ours batched | batched / one at a time "
            "| transformers batched | ours / transformers |")
    if hybrid:
        head += " hybrid batched |"
    print("\ncompletions per second\n")
    print(head)
    print("|---:" * (head.count("|") - 1) + "|")
    for n, r in rows:
        line = (f"| {n} | {r['one']:.3f} | {r['batched']:.3f} | {r['batched'] / r['one']:.2f} "
                f"| {r['torch']:.3f} | {r['batched'] / r['torch']:.2f} |")
        if hybrid:
            line += f" {r['hybrid']:.3f} |"
        print(line)


if __name__ == "__main__":
    main()
