#!/usr/bin/env python3
"""Memory of a training run (issue 24, point 2): `multipl-moe train`'s resident memory over
time, split by phase, against the memory its state needs at least.

Runs `multipl-moe train --config CONFIG --model MODEL --data DATA --out OUT` (release build,
`--threads` threads), samples the process's VmRSS every 0.2 s and labels each sample with what
the run is doing, read from its files: `load` (before the first row of `loss.csv`), `train`,
`checkpoint` (a `checkpoint/.*.mpk.tmp` file is being written), `export` (after the last
checkpoint, while `model/` is written). At the end it reads the export's safetensors header and
counts the parameters, total and trainable (by the config's `[train.freeze]`, SPEC §5's freeze
where it is absent, applied to docs/FORMAT.md's key names), and prints a Markdown table: the f32 weights, their
gradients and AdamW's two moments (trainable only) -- the state a training step cannot do
without -- the peak RSS of each phase, and each peak over that minimum. What a step holds beyond
the minimum (saved activations, logits, the optimizer's temporaries) is the training peak minus
it.

    python3 scripts/train_memory.py --model /work/smollm2 --data /work/data/real-code \
        --out runs/smollm2-paper [--config examples/smollm2-paper.toml] [--threads 2]

Needs only the Python standard library and a release build (`cargo build --release`).
"""
import argparse
import json
import tomllib
import os
import struct
import subprocess
import sys
import threading
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
BIN = os.path.join(ROOT, "target", "release", "multipl-moe")
GIB = 1024 ** 3
# `[train.freeze]` switches (crates/multipl-moe-qwen/src/freeze.rs) and the export's keys each
# one governs (docs/FORMAT.md); every other key is the backbone's.
FREEZE_KEYS = {
    "routed_experts": (".token_experts.",),
    "segment_experts": (".segment_experts.",),
    "routers": (".token_router.", ".segment_router."),
    "shared_and_dense_ffn": (".shared_expert.", ".mlp.gate_proj.", ".mlp.up_proj.",
                             ".mlp.down_proj."),
}
# SPEC §5's freeze, `FreezePolicy::paper()`: what a config without `[train.freeze]` trains.
PAPER_FREEZE = {"routed_experts": True, "segment_experts": True, "routers": True,
                "shared_and_dense_ffn": False, "backbone": False}


def freeze_policy(config):
    """`[train.freeze]` of the run config (TOML), with the paper's values for absent keys."""
    if not config.endswith(".toml"):
        sys.exit(f"{config}: this script reads TOML run configs only")
    with open(config, "rb") as f:
        given = tomllib.load(f).get("train", {}).get("freeze", {})
    return {k: bool(given.get(k, v)) for k, v in PAPER_FREEZE.items()}


def trains(key, policy):
    """Whether `policy` trains the export's tensor `key`."""
    for switch, parts in FREEZE_KEYS.items():
        if any(p in key for p in parts):
            return policy[switch]
    return policy["backbone"]


def rss_bytes(pid):
    """VmRSS of `pid` in bytes, or None once it has exited."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def phase(out):
    """What the run in `out` is doing, from its files, and the rows of its `loss.csv` (one per
    micro-batch)."""
    rows = 0
    loss = os.path.join(out, "loss.csv")
    if os.path.exists(loss):
        with open(loss) as f:
            rows = max(sum(1 for _ in f) - 1, 0)
    ckpt = os.path.join(out, "checkpoint")
    if os.path.isdir(ckpt) and any(n.endswith(".mpk.tmp") for n in os.listdir(ckpt)):
        return "checkpoint", rows
    if os.path.exists(os.path.join(out, "model")) or any(
            n.startswith(".model") for n in os.listdir(out)):
        return "export", rows
    return ("train" if rows > 0 else "load"), rows


def counts(model_dir, policy):
    """(total, trainable) parameter counts from the export's safetensors header."""
    total = trainable = 0
    for name in sorted(os.listdir(model_dir)):
        if not name.endswith(".safetensors"):
            continue
        with open(os.path.join(model_dir, name), "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        for key, info in header.items():
            if key == "__metadata__":
                continue
            size = 1
            for d in info["shape"]:
                size *= d
            total += size
            if trains(key, policy):
                trainable += size
    return total, trainable


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--config", default=os.path.join(ROOT, "examples", "smollm2-paper.toml"))
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: run `cargo build --release` first")
    if os.path.exists(args.out):
        sys.exit(f"{args.out} exists: give a new --out (the phases are read from its files)")
    env = dict(os.environ, RAYON_NUM_THREADS=str(args.threads))
    host = subprocess.run([BIN, "host", "--threads", str(args.threads)], env=env, check=True,
                          capture_output=True, text=True).stdout.strip()
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    print(f"{host}; commit {commit}", flush=True)
    cmd = [BIN, "train", "--config", args.config, "--model", args.model, "--data", args.data,
           "--out", args.out]
    print(" ".join(cmd), flush=True)
    start = time.time()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    tail = []

    def keep_output():
        for line in proc.stdout:
            tail.append(line)
            del tail[:-40]

    reader = threading.Thread(target=keep_output, daemon=True)
    reader.start()
    peaks, seconds, trace = {}, {}, []
    last = start
    while proc.poll() is None:
        rss = rss_bytes(proc.pid)
        now = time.time()
        if rss is not None:
            p, rows = phase(args.out) if os.path.isdir(args.out) else ("load", 0)
            peaks[p] = max(peaks.get(p, 0), rss)
            seconds[p] = seconds.get(p, 0.0) + (now - last)
            trace.append((round(now - start, 1), p, rows, rss))
        last = now
        time.sleep(0.2)
    reader.join(timeout=5)
    wall = time.time() - start
    with open(os.path.join(args.out, "rss-trace.json"), "w") as f:
        json.dump({"host": host, "commit": commit, "returncode": proc.returncode,
                   "trace": trace}, f)
    if proc.returncode != 0:
        print("".join(tail))
        sys.exit(f"train exited with status {proc.returncode} after {wall:.0f} s; "
                 f"peaks so far (GiB): "
                 + ", ".join(f"{k} {v / GIB:.2f}" for k, v in peaks.items()))
    total, trainable = counts(os.path.join(args.out, "model"), freeze_policy(args.config))
    weights, grads, moments = 4 * total, 4 * trainable, 8 * trainable
    minimum = weights + grads + moments
    print(f"\n{total / 1e9:.3f} B parameters, {trainable / 1e9:.3f} B trainable; "
          f"wall {wall:.0f} s")
    print("\n| quantity | GiB | / minimum |\n|---|---:|---:|")
    for name, v in [("weights (f32, all)", weights), ("gradients (trainable)", grads),
                    ("AdamW moments (trainable)", moments), ("minimum (sum)", minimum)]:
        print(f"| {name} | {v / GIB:.2f} | |")
    for p in ["load", "train", "checkpoint", "export"]:
        if p in peaks:
            print(f"| peak RSS, {p} ({seconds[p]:.0f} s) | {peaks[p] / GIB:.2f} | "
                  f"{peaks[p] / minimum:.2f} |")
    overall = max(peaks.values())
    print(f"| peak RSS, whole run | {overall / GIB:.2f} | {overall / minimum:.2f} |")
    if "train" in peaks:
        print(f"| beyond the minimum while training (activations, logits, temporaries) | "
              f"{(peaks['train'] - minimum) / GIB:.2f} | |")


if __name__ == "__main__":
    main()
