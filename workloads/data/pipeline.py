"""Spec's data set -> tokenizer + train/validation token blocks, the same on every rank and restart."""

from __future__ import annotations

import os
from typing import Any

from workloads.data.blocks import to_blocks
from workloads.data.corpus import prepare
from workloads.data.tokenizer import load_tokenizer, train_tokenizer


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def tokenizer_for(ds: Any, train_texts: list[str], output_dir: str, is_main: bool, fallback: str | None = None) -> Any:
    """The spec's tokenizer dir, else ``fallback`` (a base model's dir), else one trained on the data.

    A trained tokenizer is saved under ``output_dir/tokenizer`` and reused on restart, so a resumed
    run tokenises exactly as before. Rank 0 trains it; other ranks load it (or train the same one).
    """
    if ds.tokenizer:
        return load_tokenizer(ds.tokenizer)
    if fallback and os.path.isfile(os.path.join(fallback, "tokenizer.json")):
        return load_tokenizer(fallback)
    saved = os.path.join(output_dir, "tokenizer")
    if os.path.isfile(os.path.join(saved, "tokenizer.json")):
        _barrier()
        return load_tokenizer(saved)
    if is_main:
        tok = train_tokenizer(train_texts, ds.vocab_size, saved)
        _barrier()
        return tok
    _barrier()
    if os.path.isfile(os.path.join(saved, "tokenizer.json")):
        return load_tokenizer(saved)
    return train_tokenizer(train_texts, ds.vocab_size, None)  # output not shared with rank 0: same data, same BPE


def load_data(data_path: str, ds: Any, seq_len: int, output_dir: str, is_main: bool,
              fallback_tokenizer: str | None = None) -> tuple[Any, Any, Any, dict[str, int]]:
    """(tokenizer, train blocks, validation blocks, stats) for a run."""
    splits = prepare(data_path, fmt=ds.format, text_field=ds.text_field, dedupe=ds.dedupe, min_chars=ds.min_chars,
                     validation_fraction=ds.validation_fraction, max_documents=ds.max_documents, seed=ds.seed)
    tok = tokenizer_for(ds, splits.train, output_dir, is_main, fallback_tokenizer)
    train = to_blocks(splits.train, tok, seq_len)
    val = to_blocks(splits.validation, tok, seq_len)
    stats = {**splits.stats, "train_blocks": int(train.shape[0]), "validation_blocks": int(val.shape[0])}
    return tok, train, val, stats
