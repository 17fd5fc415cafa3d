"""A byte-level BPE tokenizer trained with `tokenizers` on the data, or loaded from a local directory."""

from __future__ import annotations

import os
from typing import Any, Iterable

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | None = None) -> Any:
    """Train a byte-level BPE on ``texts``; save it as a transformers tokenizer in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        fast.save_pretrained(out_dir)
    return fast


def load_tokenizer(path: str) -> Any:
    """A tokenizer saved in a local directory (raises ValueError naming the path when missing)."""
    from transformers import AutoTokenizer

    if not os.path.isdir(path):
        raise ValueError(f"dataset.tokenizer: {path} is not a directory on this node")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok
