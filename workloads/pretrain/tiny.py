"""A tiny random model + tokenizer trained on the shipped corpus, saved locally (tests, demos, benchmarks).

``python -m workloads.pretrain.tiny OUT_DIR [--arch llama] [--hidden 128] [--layers 2] [--heads 2]``
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[2] / "examples" / "corpus" / "stories.txt"


def save_tiny_model(out_dir: str, *, arch: str = "llama", hidden: int = 128, layers: int = 2, heads: int = 2,
                    vocab_size: int = 1000, max_seq_len: int = 256, seed: int = 0) -> str:
    """Write a random-init causal LM (head size hidden/heads; vLLM wants >= 64) and its tokenizer."""
    from workloads.data.corpus import clean, records
    from workloads.data.tokenizer import train_tokenizer
    from workloads.pretrain.model import build_model
    from workloads.spec_parts import ModelSpec

    tok = train_tokenizer((clean(row["text"]) for _, row in records(str(CORPUS))), vocab_size, None)
    spec = ModelSpec(arch=arch, hidden_size=hidden, num_layers=layers, num_heads=heads, max_seq_len=max_seq_len)
    model = build_model(spec, tok, seed=seed)
    model.config.use_cache = True
    os.makedirs(out_dir, exist_ok=True)
    model.save_pretrained(out_dir, safe_serialization=True)
    tok.save_pretrained(out_dir)
    return out_dir


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("out_dir")
    p.add_argument("--arch", default="llama", choices=["llama", "gpt2"])
    p.add_argument("--hidden", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--heads", type=int, default=2)
    p.add_argument("--vocab", type=int, default=1000)
    a = p.parse_args()
    print(save_tiny_model(a.out_dir, arch=a.arch, hidden=a.hidden, layers=a.layers, heads=a.heads, vocab_size=a.vocab))


if __name__ == "__main__":
    main()
