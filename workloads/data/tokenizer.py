"""Tokenizers: the model's own (local or hub), checked against the model; or, for a pre-train from
scratch only, a byte-level BPE trained on the data with `tokenizers`."""

from __future__ import annotations

import json
import os
from typing import Any, Iterable

from workloads.hub import resolve_model

SPECIAL = {"bos_token": "<s>", "eos_token": "</s>", "pad_token": "<pad>", "unk_token": "<unk>"}
# A plain-text chat template for tokenizers trained here (turns end with EOS, which trains).
DEFAULT_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "tokenizer_config.json")


class TokenizerMismatch(ValueError):
    """A tokenizer whose vocabulary or special tokens do not fit the model it would feed."""


def train_tokenizer(texts: Iterable[str], vocab_size: int, out_dir: str | None = None) -> Any:
    """Train a byte-level BPE on ``texts`` (an iterator is fine); save it in ``out_dir``."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=SPECIAL["unk_token"]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=list(SPECIAL.values()),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, **SPECIAL)
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    if out_dir:
        os.makedirs(out_dir, exist_ok=True)
        fast.save_pretrained(out_dir)
    return fast


def has_tokenizer(path: str) -> bool:
    return any(os.path.isfile(os.path.join(path, f)) for f in TOKENIZER_FILES[:3])


def load_tokenizer(ref: str, what: str = "dataset.tokenizer", *, cache: str | None = None,
                   needs: str | None = None) -> Any:
    """The tokenizer in directory (or hub model) ``ref``; ValueError naming ``what`` when it has none."""
    from transformers import AutoTokenizer

    path = resolve_model(ref, what, cache=cache, needs=needs)
    if not has_tokenizer(path):
        raise TokenizerMismatch(f"{what}: {ref} has no tokenizer files ({', '.join(TOKENIZER_FILES[:3])}); "
                                "give dataset.tokenizer: the tokenizer the model was trained with")
    tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token or tok.unk_token
    return tok


def check_matches_model(tok: Any, model_dir: str, what: str = "dataset.tokenizer") -> None:
    """Refuse a tokenizer whose ids do not fit the model's embedding or whose special tokens differ."""
    try:
        with open(os.path.join(model_dir, "config.json"), encoding="utf-8") as f:
            config = json.load(f)
    except (OSError, ValueError):
        return
    config = config.get("text_config", config)
    rows = config.get("vocab_size")
    if rows and len(tok) > int(rows):
        raise TokenizerMismatch(f"{what}: the tokenizer has {len(tok)} tokens but the model's embedding has "
                                f"{rows} rows; use the tokenizer the model was trained with")
    for name in ("bos_token_id", "eos_token_id"):
        want, have = config.get(name), getattr(tok, name, None)
        if isinstance(want, int) and isinstance(have, int) and want != have:
            raise TokenizerMismatch(f"{what}: the tokenizer's {name} is {have} but the model's is {want}; "
                                    "use the tokenizer the model was trained with")
