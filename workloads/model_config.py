"""A model's config.json (local directory or hub id) -> ModelSpec, for memory estimates."""

from __future__ import annotations

import json
from typing import Any

from workloads.spec_parts import ModelSpec


def spec_from_config(c: dict[str, Any]) -> ModelSpec:
    """The estimate's view of a transformers config (llama-like unless it is gpt2)."""
    h = int(c.get("hidden_size") or c.get("n_embd"))
    heads = int(c.get("num_attention_heads") or c.get("n_head"))
    return ModelSpec(
        arch="gpt2" if c.get("model_type") == "gpt2" else "llama",
        hidden_size=h,
        num_layers=int(c.get("num_hidden_layers") or c.get("n_layer")),
        num_heads=heads,
        num_kv_heads=c.get("num_key_value_heads") or None,
        intermediate_size=c.get("intermediate_size") or c.get("n_inner") or None,
        vocab_size=int(c["vocab_size"]),
        max_seq_len=int(c.get("max_position_embeddings") or c.get("n_positions") or 2048),
        tie_embeddings=bool(c.get("tie_word_embeddings", False)),
    )


def model_of(ref: str, what: str, cache: str | None = None) -> ModelSpec:
    """The ModelSpec of model ``ref``; ValueError naming ``what`` when its config cannot be read."""
    from workloads.hub import cached_file

    path = cached_file(ref, "config.json", cache=cache)
    try:
        if path is None:
            raise OSError("no config.json")
        with open(path, encoding="utf-8") as f:
            return spec_from_config(json.load(f))
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ValueError(f"{what}: cannot read the config.json of {ref} here to estimate its memory ({exc}); "
                         "give `model:` (its architecture) or `resources:`") from None
