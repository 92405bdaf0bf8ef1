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

- fixtures/llama-*/ (`--only llama`, transformers 5.25 / PyTorch 2.15): LlamaForCausalLM from
  random configs, f32, each with reference.safetensors holding `tokens` [2, T], the logits
  [2, T, vocab] and `generated` [1, 8 + 10]: transformers' greedy `generate` (10 new tokens)
  after the first 8 tokens of row 0.
  - llama-gqa-untied: GQA 4/2, untied head, head_dim 16 != hidden/heads = 12, no biases.
  - llama-tied-bias: MHA, tied embeddings, `attention_bias: true` (q/k/v/o biases).
  - llama3-rope: GQA, `rope_type: llama3` (factor 4, low 1, high 4, original context 8) so
    that all three frequency bands occur in a head of 16.
  - tokenizer/bos-cases.json: transformers' `tokenizer(prompt).input_ids` for the fixture
    tokenizer under five tokenizer_config.json / post-processor combinations (BOS handling).

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


def drop_generation_config(out):
    """Removes the generation_config.json that save_pretrained writes: the fixtures are models
    only, and the import ignores it."""
    path = os.path.join(out, "generation_config.json")
    if os.path.exists(path):
        os.remove(path)


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
    drop_generation_config(out)
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
    drop_generation_config(out)
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


def build_llama(name, seed, **cfg):
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=128, hidden_size=48, intermediate_size=64,
                         max_position_embeddings=64, rms_norm_eps=1e-5, **cfg)
    model = LlamaForCausalLM(config).eval()
    perturb(model, large=("q_proj", "k_proj", "v_proj", "o_proj", "mlp"))
    out = os.path.join(ROOT, name)
    model.save_pretrained(out, safe_serialization=True)
    ref = LlamaForCausalLM.from_pretrained(out, dtype=torch.float32,
                                           attn_implementation="eager").eval()
    prompt = TOKENS[:1, :8]
    with torch.no_grad():
        logits = ref(TOKENS).logits.float().contiguous()
        generated = ref.generate(prompt, attention_mask=torch.ones_like(prompt), do_sample=False,
                                 max_new_tokens=10, min_new_tokens=10, eos_token_id=None,
                                 pad_token_id=0)
    save_file({"tokens": TOKENS.contiguous(), "logits": logits,
               "generated": generated.contiguous()},
              os.path.join(out, "reference.safetensors"))
    drop_generation_config(out)
    print(f"{name}: logits {tuple(logits.shape)}, generated {generated[0, 8:].tolist()}")


def llama_fixtures():
    build_llama("llama-gqa-untied", 11, num_hidden_layers=2, num_attention_heads=4,
                num_key_value_heads=2, head_dim=16, tie_word_embeddings=False,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    build_llama("llama-tied-bias", 12, num_hidden_layers=1, num_attention_heads=4,
                num_key_value_heads=4, attention_bias=True, tie_word_embeddings=True,
                rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
    build_llama("llama3-rope", 13, num_hidden_layers=1, num_attention_heads=3,
                num_key_value_heads=1, head_dim=16, tie_word_embeddings=True,
                rope_parameters={"rope_type": "llama3", "rope_theta": 10000.0, "factor": 4.0,
                                 "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                 "original_max_position_embeddings": 8})


BOS_PROMPT = "def add(a, b):\n    return a + b\n"


def bos_cases():
    """transformers' `tokenizer(prompt).input_ids` for the fixture tokenizer under
    tokenizer_config.json / post-processor combinations (Llama 2 and 3 add BOS by their
    post-processor). transformers 5 follows the post-processor and does not apply
    tokenizer_config.json's add_bos_token / add_eos_token: the cases record that."""
    import shutil
    import tempfile
    from tokenizers import Tokenizer, processors
    from transformers import AutoTokenizer
    src = os.path.join(ROOT, "tokenizer", "tokenizer.json")
    bos = {"bos_token": "<|im_start|>", "eos_token": "<|im_end|>"}
    cases = {
        "no-config": (None, None),
        "add-bos": (dict(bos, add_bos_token=True), None),
        "add-bos-and-eos": (dict(bos, add_bos_token=True, add_eos_token=True), None),
        "template-bos": (dict(bos), "<|im_start|> $A"),
        "template-bos-overridden": (dict(bos, add_bos_token=False), "<|im_start|> $A"),
    }
    out = {"prompt": BOS_PROMPT, "cases": {}}
    for name, (config, template) in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            tok = Tokenizer.from_file(src)
            if template:
                tok.post_processor = processors.TemplateProcessing(
                    single=template, special_tokens=[("<|im_start|>", tok.token_to_id("<|im_start|>"))])
            tok.save(os.path.join(tmp, "tokenizer.json"))
            if config is not None:
                with open(os.path.join(tmp, "tokenizer_config.json"), "w") as f:
                    json.dump(dict(config, tokenizer_class="PreTrainedTokenizerFast"), f)
            ids = AutoTokenizer.from_pretrained(tmp)(BOS_PROMPT).input_ids
            out["cases"][name] = {"tokenizer_config": config, "post_processor": template,
                                  "input_ids": ids}
    with open(os.path.join(ROOT, "tokenizer", "bos-cases.json"), "w") as f:
        json.dump(out, f, indent=1)
    print("bos cases:", {k: v["input_ids"][:2] for k, v in out["cases"].items()})


def check_export(path):
    from transformers import AutoModelForCausalLM
    ref = load_file(os.path.join(path, "reference.safetensors"))
    # The class of the export's model_type (Qwen2, Llama or Mistral; docs/FORMAT.md).
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        logits = model(ref["tokens"]).logits
    err = (logits - ref["logits"]).abs().max().item()
    print(f"max |logit diff| = {err:.3e}")
    sys.exit(0 if err < 1e-4 else 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--check-export")
    ap.add_argument("--only", choices=["rope", "llama"])
    args = ap.parse_args()
    if args.check_export:
        check_export(args.check_export)
        return
    if args.only == "rope":
        rope_fixtures()
        return
    if args.only == "llama":
        llama_fixtures()
        bos_cases()
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
