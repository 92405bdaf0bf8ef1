#!/usr/bin/env python3
"""Builds the Hugging Face fixtures of the test suite (committed under fixtures/).

Needs torch, transformers and tokenizers; CI does not run it. Re-running it rewrites the
fixtures deterministically (fixed seeds). The two model fixtures and the tokenizer were made
with transformers 4.46; `--only rope` (re)makes just the RoPE/config-layout fixture, made with
transformers 5.24 / PyTorch 2.15.

- fixtures/qwen2-gqa-bf16/: Qwen2ForCausalLM, untied head, GQA (4 heads, 2 kv heads),
  rope_theta = 50000, 2 layers, saved as *sharded bf16* safetensors.
- fixtures/qwen2-tied-f32/: tied embeddings, MHA, 1 layer, saved as one f32 file.
- each model dir also holds reference.safetensors: `tokens` [2, T] (i64) and the
  transformers logits [2, T, vocab] (f32) computed in f32 from the saved weights.
- fixtures/tokenizer/tokenizer.json: byte-level BPE with Qwen2's pre-tokenizer, trained on a
  small multi-language corpus, with Qwen's special tokens.

- fixtures/qwen2-rope/: one tied, GQA, 1-layer model saved by transformers 5 with
  max_position_embeddings = 16, and config variants in both layouts (transformers 4.x:
  top-level rope_theta / rope_scaling / torch_dtype; 5.x: rope_parameters / dtype /
  layer_types) for RoPE types default, linear and yarn, each with the transformers logits of
  24 tokens (1.5x the position limit): configs/NAME.json + reference-NAME.safetensors.

`python3 scripts/make_fixtures.py --check-export DIR` loads a dense model exported by
`multipl-moe` in transformers and compares its logits with DIR/reference.safetensors.
"""
import argparse
import json
import os
import sys

import torch
from safetensors.torch import load_file, save_file
from transformers import Qwen2Config, Qwen2ForCausalLM

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures")
TOKENS = torch.tensor([[1, 5, 9, 77, 3, 120, 64, 2, 2, 31, 8, 100],
                       [0, 127, 44, 45, 46, 7, 7, 7, 90, 12, 13, 14]])


def perturb(model, large=()):
    """Non-trivial norms and biases, so that a skipped weight shows in the logits; the weights
    whose names contain one of `large` redrawn with std 0.5."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n:
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif n.endswith("bias"):
                p.copy_(0.05 * torch.randn_like(p))
            elif any(part in n for part in large):
                p.copy_(0.5 * torch.randn_like(p))


def build(name, seed, dtype, max_shard_size, **cfg):
    torch.manual_seed(seed)
    config = Qwen2Config(**cfg)
    model = Qwen2ForCausalLM(config).eval()
    perturb(model)
    out = os.path.join(ROOT, name)
    model.to(dtype).save_pretrained(out, safe_serialization=True, max_shard_size=max_shard_size)
    # Reference logits: the saved (possibly bf16-rounded) weights, computed in f32.
    ref = Qwen2ForCausalLM.from_pretrained(out, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = ref(TOKENS).logits.float().contiguous()
    save_file({"tokens": TOKENS.contiguous(), "logits": logits}, os.path.join(out, "reference.safetensors"))
    for junk in ("generation_config.json",):
        path = os.path.join(out, junk)
        if os.path.exists(path):
            os.remove(path)
    print(f"{name}: logits {tuple(logits.shape)}")


def tokenizer():
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    pattern = r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
    tok = Tokenizer(models.BPE(byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    corpus = [
        "def add(a, b):\n    return a + b\n\nfor i in range(10):\n    print(i)\n",
        "public class Main {\n    public static void main(String[] args) {\n        System.out.println(\"hi\");\n    }\n}\n",
        "#include <vector>\nint sum(const std::vector<int>& v) { int s = 0; for (int x : v) s += x; return s; }\n",
        "fn main() {\n    let v: Vec<u32> = (0..10).map(|x| x * 2).collect();\n    println!(\"{:?}\", v);\n}\n",
        "package main\n\nimport \"fmt\"\n\nfunc main() {\n\tfor i := 0; i < 3; i++ {\n\t\tfmt.Println(i)\n\t}\n}\n",
        "def greet(name)\n  puts \"Hello, #{name}!\"\nend\n[1, 2, 3].each { |x| puts x }\n",
    ] * 4
    trainer = trainers.BpeTrainer(vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>", "<|im_start|>", "<|im_end|>"])
    tok.train_from_iterator(corpus, trainer)
    out = os.path.join(ROOT, "tokenizer")
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    print("tokenizer:", tok.get_vocab_size(), "tokens")


ROPE_TOKENS = torch.tensor([[3, 17, 99, 4, 4, 61, 120, 7, 33, 2, 90, 45, 12, 5, 77, 101,
                             64, 8, 8, 19, 127, 0, 56, 30],
                            [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 44, 33, 77, 110, 60, 43,
                             103, 18, 121, 11, 4, 15, 19, 34]])
ROPE_VARIANTS = {
    "default": None,
    "linear": {"rope_type": "linear", "factor": 2.0},
    "yarn": {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 8},
}


def rope_fixtures():
    """One set of weights, configs in the 4.x and 5.x layouts, transformers' logits for each."""
    torch.manual_seed(3)
    out = os.path.join(ROOT, "qwen2-rope")
    config = Qwen2Config(vocab_size=128, hidden_size=64, intermediate_size=96, num_hidden_layers=1,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=16,
                         rope_parameters={"rope_type": "default", "rope_theta": 1e6},
                         tie_word_embeddings=True)
    model = Qwen2ForCausalLM(config).eval()
    perturb(model, large=("embed", "q_proj", "k_proj"))  # large q/k make position errors visible
    model.save_pretrained(out, safe_serialization=True)
    saved = json.load(open(os.path.join(out, "config.json")))
    os.remove(os.path.join(out, "config.json"))
    for junk in ("generation_config.json",):
        if os.path.exists(os.path.join(out, junk)):
            os.remove(os.path.join(out, junk))
    os.makedirs(os.path.join(out, "configs"), exist_ok=True)
    scratch = os.path.join(out, "_scratch")
    os.makedirs(scratch, exist_ok=True)
    os.replace(os.path.join(out, "model.safetensors"), os.path.join(scratch, "model.safetensors"))
    for kind, scaling in ROPE_VARIANTS.items():
        v5 = dict(saved)
        v5["rope_parameters"] = dict(scaling or {"rope_type": "default"}, rope_theta=1e6)
        v4 = {k: v for k, v in saved.items() if k not in ("rope_parameters", "dtype", "layer_types")}
        v4.update(rope_theta=1e6, torch_dtype="float32", transformers_version="4.46.0")
        if scaling:
            legacy = {("type" if k == "rope_type" else k): v for k, v in scaling.items()}
            v4["rope_scaling"] = legacy
        for layout, cfg in (("v5", v5), ("v4", v4)):
            name = f"{layout}-{kind}"
            with open(os.path.join(out, "configs", name + ".json"), "w") as f:
                json.dump(cfg, f, indent=2, sort_keys=True)
            with open(os.path.join(scratch, "config.json"), "w") as f:
                json.dump(cfg, f)
            ref = Qwen2ForCausalLM.from_pretrained(scratch, dtype=torch.float32,
                                                   attn_implementation="eager").eval()
            with torch.no_grad():
                logits = ref(ROPE_TOKENS).logits.float().contiguous()
            save_file({"tokens": ROPE_TOKENS.contiguous(), "logits": logits},
                      os.path.join(out, f"reference-{name}.safetensors"))
            print(f"qwen2-rope {name}: logits {tuple(logits.shape)}")
    os.replace(os.path.join(scratch, "model.safetensors"), os.path.join(out, "model.safetensors"))
    os.remove(os.path.join(scratch, "config.json"))
    os.rmdir(scratch)


def check_export(path):
    ref = load_file(os.path.join(path, "reference.safetensors"))
    model = Qwen2ForCausalLM.from_pretrained(path, torch_dtype=torch.float32, attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(ref["tokens"]).logits
    err = (logits - ref["logits"]).abs().max().item()
    print(f"max |logit diff| = {err:.3e}")
    sys.exit(0 if err < 1e-4 else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-export")
    ap.add_argument("--only", choices=["rope"])
    args = ap.parse_args()
    if args.check_export:
        check_export(args.check_export)
        return
    if args.only == "rope":
        rope_fixtures()
        return
    common = dict(vocab_size=128, hidden_size=32, intermediate_size=48, max_position_embeddings=64,
                  rms_norm_eps=1e-6, use_sliding_window=False)
    build("qwen2-gqa-bf16", 1, torch.bfloat16, "20KB", num_hidden_layers=2, num_attention_heads=4,
          num_key_value_heads=2, rope_theta=50000.0, tie_word_embeddings=False, **common)
    build("qwen2-tied-f32", 2, torch.float32, "10GB", num_hidden_layers=1, num_attention_heads=2,
          num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=True, **common)
    tokenizer()


if __name__ == "__main__":
    main()
