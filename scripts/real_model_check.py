#!/usr/bin/env python3
"""The real pretrained model through `multipl-moe`, next to transformers (issue 23).

    python3 scripts/real_model_check.py DIR [--threads 2] [--rounds 3] [--new-tokens 64]

DIR is the checkpoint `scripts/real_model.py DIR` made (SmolLM2-135M-Instruct, Llama
architecture). Prints Markdown tables of:

1. logits: `multipl-moe logits` and transformers (f32, eager attention) on 1000 tokens of real
   source code in each of the six languages, one batch [6, 1000]: max |delta logit|, the logit
   scale, argmax agreement, and next-token cross-entropy (nats/token) of both. The code is
   read from this machine's packages (Debian `python3`, `ruby`, `golang-go`,
   `openjdk-17-source` / the JDK's src.zip, `libstdc++-12-dev`, and the cargo registry for
   Rust): real code the project never trains on, though it may be in SmolLM2's pre-training
   data;
2. greedy `multipl-moe generate` text against transformers' `generate` (do_sample=False) on
   code prompts, token for token;
3. upcycling: `multipl-moe upcycle` with the paper preset and with `--function-preserving`,
   each hybrid's logits on the same batch against the dense model's (max |delta|, argmax
   agreement, CE): the function-preserving start equals the dense model, the paper preset's
   does not (SPEC §6);
4. speed: prefill and decode tokens/s of `multipl-moe generate` and transformers eager (a
   prefill forward keeping the last logits, then greedy steps with the KV cache), alternating
   rounds on the same threads, medians.

Needs torch, transformers and `cargo build --release`.
"""
import argparse
import glob
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_user_path import ours, theirs  # noqa: E402  (the same timed runs)

ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
BIN = os.path.join(ROOT, "target", "release", "multipl-moe")
TOKENS = 1000

# Real source files per language: (glob patterns, tried in order). The first sorted match with
# enough text is used, so the choice is reproducible on a machine with the same packages.
SOURCES = {
    "python": ["/usr/lib/python3.11/json/decoder.py", "/usr/lib/python3*/json/decoder.py"],
    "ruby": ["/usr/lib/ruby/3.*/set.rb", "/usr/lib/ruby/*/set.rb", "/usr/lib/ruby/**/*.rb"],
    "go": ["/usr/lib/go-*/src/strings/strings.go", "/usr/lib/go*/src/strings/strings.go"],
    "java": ["zip:/usr/lib/jvm/java-17-openjdk-amd64/lib/src.zip:java.base/java/util/ArrayDeque.java"],
    "cpp": ["/usr/include/c++/12/bits/stl_vector.h", "/usr/include/c++/*/bits/stl_vector.h"],
    "rust": [os.path.expanduser("~/.cargo/registry/src/*/smallvec-1.*/src/lib.rs"),
             os.path.expanduser("~/.cargo/registry/src/*/itoa-1.*/src/lib.rs")],
}

PROMPTS = [
    'def fibonacci(n: int) -> int:\n    """Return the n-th Fibonacci number."""\n',
    "fn main() {\n    let v: Vec<u32> = (1..10).collect();\n",
    "package main\n\nimport \"fmt\"\n\n// Reverse returns s reversed.\nfunc Reverse(s string) string {\n",
]


def read_source(patterns):
    for pattern in patterns:
        if pattern.startswith("zip:"):
            _, archive, member = pattern.split(":", 2)
            if os.path.exists(archive):
                with zipfile.ZipFile(archive) as z:
                    return member, z.read(member).decode("utf-8")
            continue
        for path in sorted(glob.glob(pattern, recursive=True)):
            text = open(path, encoding="utf-8", errors="replace").read()
            if len(text) > 8 * TOKENS:
                return path, text
    return None, None


TORCH_LOGITS = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM
torch.set_num_threads(int(sys.argv[3]))
model = AutoModelForCausalLM.from_pretrained(sys.argv[1], dtype=torch.float32,
                                             attn_implementation="eager").eval()
ids = torch.tensor(json.load(open(sys.argv[2])))
with torch.no_grad():
    logits = model(ids).logits
from safetensors.torch import save_file
save_file({"logits": logits.contiguous()}, sys.argv[4])
"""

TORCH_GENERATE = r"""
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
torch.set_num_threads(int(sys.argv[2]))
path, new_tokens, prompts = sys.argv[1], int(sys.argv[3]), json.loads(sys.argv[4])
tok = AutoTokenizer.from_pretrained(path)
model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
out = []
for p in prompts:
    enc = tok(p, return_tensors="pt")
    with torch.no_grad():
        g = model.generate(**enc, do_sample=False, max_new_tokens=new_tokens)
    out.append(tok.decode(g[0, enc.input_ids.shape[1]:], skip_special_tokens=True))
print(json.dumps(out))
"""



def cross_entropy(logits, ids):
    import torch
    return torch.nn.functional.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]),
                                             ids[:, 1:].reshape(-1), reduction="none").view(
                                                 ids.shape[0], -1).mean(1)


def real_code_batch(model_dir):
    """(languages, token rows, source paths) of the real code, TOKENS tokens each."""
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(model_dir)
    langs, rows, sources = [], [], []
    for lang, patterns in SOURCES.items():
        path, text = read_source(patterns)
        if text is None:
            print(f"(no {lang} source found: {patterns})", file=sys.stderr)
            continue
        ids = tok(text, add_special_tokens=False).input_ids[:TOKENS]
        if len(ids) < TOKENS:
            continue
        langs.append(lang)
        rows.append(ids)
        sources.append(path)
    return langs, rows, sources


def our_logits(model_dir, rows, env):
    from safetensors.torch import load_file
    with tempfile.TemporaryDirectory() as tmp:
        batch = os.path.join(tmp, "tokens.json")
        json.dump(rows, open(batch, "w"))
        out = os.path.join(tmp, "ours.st")
        subprocess.run([BIN, "logits", "--model", model_dir, "--tokens-file", batch, "--out",
                        out], env=env, check=True, capture_output=True)
        return load_file(out)["logits"]


def upcycle_table(model_dir, env):
    import torch
    langs, rows, _ = real_code_batch(model_dir)
    ids = torch.tensor(rows)
    dense = our_logits(model_dir, rows, env)
    ce_dense = cross_entropy(dense, ids)
    print("### upcycling: hybrid vs the dense model it was made from, same batch\n")
    print("| upcycle | parameters | max abs delta logit | argmax agreement | CE dense | CE hybrid |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, flags in (("paper preset", []), ("paper preset, --function-preserving",
                                                 ["--function-preserving"])):
        with tempfile.TemporaryDirectory() as tmp:
            out = os.path.join(tmp, "hybrid")
            subprocess.run([BIN, "upcycle", "--model", model_dir, "--out", out] + flags,
                           env=env, check=True, capture_output=True)
            size = os.path.getsize(os.path.join(out, "model.safetensors"))
            hybrid = our_logits(out, rows, env)
        delta = (hybrid - dense).abs().max().item()
        agree = (hybrid.argmax(-1) == dense.argmax(-1)).float().mean().item()
        ce = cross_entropy(hybrid, ids)
        print(f"| {label} | {size / 4 / 1e6:.0f} M | {delta:.2e} | {100 * agree:.1f} % | "
              f"{ce_dense.mean():.4f} | {ce.mean():.4f} |")
    print(f"\n(CE: mean over {', '.join(langs)})\n")


def logits_table(model_dir, env, threads):
    import torch
    from safetensors.torch import load_file
    langs, rows, sources = real_code_batch(model_dir)
    ours = our_logits(model_dir, rows, env)
    with tempfile.TemporaryDirectory() as tmp:
        batch = os.path.join(tmp, "tokens.json")
        json.dump(rows, open(batch, "w"))
        theirs_path = os.path.join(tmp, "theirs.st")
        subprocess.run([sys.executable, "-c", TORCH_LOGITS, model_dir, batch, str(threads),
                        theirs_path], env=env, check=True, capture_output=True)
        theirs = load_file(theirs_path)["logits"]
    ids = torch.tensor(rows)
    ce_ours, ce_theirs = cross_entropy(ours, ids), cross_entropy(theirs, ids)
    print(f"### logits: {len(langs)} x {TOKENS} tokens of real code\n")
    print("| language | source | max abs delta logit | max abs logit | argmax agreement | CE ours | CE transformers |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for i, lang in enumerate(langs):
        delta = (ours[i] - theirs[i]).abs().max().item()
        scale = theirs[i].abs().max().item()
        agree = (ours[i].argmax(-1) == theirs[i].argmax(-1)).float().mean().item()
        print(f"| {lang} | `{os.path.basename(sources[i])}` | {delta:.2e} | {scale:.1f} | "
              f"{100 * agree:.1f} % | {ce_ours[i]:.4f} | {ce_theirs[i]:.4f} |")
    print()


def generate_table(model_dir, env, threads, new_tokens):
    theirs = json.loads(subprocess.run(
        [sys.executable, "-c", TORCH_GENERATE, model_dir, str(threads), str(new_tokens),
         json.dumps(PROMPTS)], env=env, check=True, capture_output=True, text=True).stdout
        .strip().splitlines()[-1])
    print(f"### greedy generation, {new_tokens} new tokens at most\n")
    print("| prompt | equal to transformers | ours (start) |")
    print("|---|---|---|")
    for prompt, expected in zip(PROMPTS, theirs):
        ours = subprocess.run([BIN, "generate", "--model", model_dir, "--prompt", prompt,
                               "--max-new-tokens", str(new_tokens)], env=env, check=True,
                              capture_output=True, text=True).stdout
        ours = ours[:-1] if ours.endswith("\n") else ours  # the newline `generate` ends with
        same = "yes" if ours == expected else "**no**"
        if ours != expected:
            print(f"ours:   {ours!r}\ntheirs: {expected!r}", file=sys.stderr)
        show = ours[:60].replace("\n", "\\n").replace("|", "\\|")
        print(f"| `{prompt.splitlines()[0][:40]}` | {same} | `{show}` |")
    print()


def speed_table(model_dir, env, threads, rounds, new_tokens):
    _, code = read_source(SOURCES["python"])
    prompts = {"short": PROMPTS[0], "long": code[:2400]}
    print(f"### speed: {threads} threads, {new_tokens} new tokens, medians of {rounds} "
          "alternating rounds\n")
    print("| prompt | tokens | ours prefill tok/s | transformers eager | sdpa | ours decode tok/s | transformers eager | sdpa | prefill ratio (vs best) | decode ratio (vs best) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, prompt in prompts.items():
        rows = {"ours": [], "eager": [], "sdpa": []}
        for _ in range(rounds):
            rows["ours"].append(ours(model_dir, env, new_tokens, prompt))
            for attn in ("eager", "sdpa"):
                rows[attn].append(theirs(env, threads, new_tokens, model_dir, prompt, attn))

        def rate(who, phase, count):
            return rows[who][0][count] / statistics.median(r[phase] for r in rows[who])

        pre = {w: rate(w, "prefill", "prompt") for w in rows}
        dec = {w: rate(w, "decode", "steps") for w in rows}
        best_pre, best_dec = max(pre["eager"], pre["sdpa"]), max(dec["eager"], dec["sdpa"])
        print(f"| {name} | {rows['ours'][0]['prompt']} | {pre['ours']:.0f} | {pre['eager']:.0f} | "
              f"{pre['sdpa']:.0f} | {dec['ours']:.1f} | {dec['eager']:.1f} | {dec['sdpa']:.1f} | "
              f"{pre['ours'] / best_pre:.2f} | {dec['ours'] / best_dec:.2f} |")
    print()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--skip-speed", action="store_true")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads), OMP_NUM_THREADS=str(args.threads))
    logits_table(args.dir, env, args.threads)
    generate_table(args.dir, env, args.threads, args.new_tokens)
    upcycle_table(args.dir, env)
    if not args.skip_speed:
        speed_table(args.dir, env, args.threads, args.rounds, args.new_tokens)


if __name__ == "__main__":
    main()
