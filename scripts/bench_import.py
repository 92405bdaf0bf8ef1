#!/usr/bin/env python3
"""Import benchmark (issue 10): `multipl-moe`'s load_model vs transformers' from_pretrained.

Makes (once) a Qwen1.5-0.5B-shaped checkpoint with transformers -- 24 layers, hidden 1024,
FFN 2816, 16 heads, vocab 151936, tied head, random weights, saved as sharded bf16 -- under
target/import_bench/, then alternates rounds: our import (`cargo bench -p multipl-moe-qwen --bench import`, ndarray
backend, bf16 -> f32) and transformers' `from_pretrained(dtype=torch.float32)`, each in a fresh
process on the same files with the same thread count, and prints a Markdown table of medians.

    python3 scripts/bench_import.py [--rounds 3] [--threads 2]

Needs torch and transformers (pip install torch transformers safetensors).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
DIR = os.path.join(ROOT, "target", "import_bench", "qwen1.5-0.5b-bf16")

TORCH_LOAD = r"""
import json, resource, sys, time
import torch
torch.set_num_threads(int(sys.argv[2]))
from transformers import Qwen2ForCausalLM
def rss():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
base = rss()
t = time.perf_counter()
m = Qwen2ForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32)
s = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"seconds": s, "peak_rss_mib": peak, "baseline_rss_mib": base}))
"""


def make_checkpoint():
    if os.path.exists(os.path.join(DIR, "config.json")):
        return
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM
    torch.manual_seed(0)
    config = Qwen2Config(vocab_size=151936, hidden_size=1024, intermediate_size=2816,
                         num_hidden_layers=24, num_attention_heads=16, num_key_value_heads=16,
                         max_position_embeddings=32768, rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                         tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(DIR, max_shard_size="300MB")
    print(f"made {DIR}", file=sys.stderr)


def run(cmd, env):
    out = subprocess.run(cmd, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    make_checkpoint()
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    build = subprocess.run(["cargo", "bench", "-p", "multipl-moe-qwen", "--bench", "import", "--no-run",
                            "--message-format=json"], cwd=ROOT, env=env, check=True, capture_output=True,
                           text=True).stdout
    bench = [json.loads(line).get("executable") for line in build.splitlines()
             if '"executable"' in line]
    bench = next(b for b in bench if b)
    ours, theirs = [], []
    for _ in range(args.rounds):
        ours.append(run([bench, DIR], env))
        theirs.append(run([sys.executable, "-c", TORCH_LOAD, DIR, str(args.threads)], env))
    med = lambda rows, k: statistics.median(r[k] for r in rows)
    f32 = ours[0]["f32_mib"]
    print(f"checkpoint: {DIR} (bf16, sharded); model in f32: {f32:.0f} MiB; "
          f"{args.threads} threads; medians of {args.rounds} alternating rounds\n")
    print("| import | wall s | peak RSS MiB | peak − baseline MiB | peak / f32 size |")
    print("|---|---:|---:|---:|---:|")
    for name, rows in (("multipl-moe `load_model` (ndarray)", ours),
                       ("transformers `from_pretrained` (f32)", theirs)):
        peak, base = med(rows, "peak_rss_mib"), med(rows, "baseline_rss_mib")
        print(f"| {name} | {med(rows, 'seconds'):.2f} | {peak:.0f} | {peak - base:.0f} | {(peak - base) / f32:.2f} |")
    print(f"\nratio of wall times (ours / transformers): {med(ours, 'seconds') / med(theirs, 'seconds'):.2f}")


if __name__ == "__main__":
    main()
