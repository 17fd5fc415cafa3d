"""Reads local text or jsonl documents, cleans and de-duplicates them, splits train/validation."""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import unicodedata
from dataclasses import dataclass, field

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_SPACES = re.compile(r"[ \t\u00a0]+")
_BLANKS = re.compile(r"\n\s*\n+")


class DataError(ValueError):
    """Bad input data, with a message that names the file and the problem."""


@dataclass
class Splits:
    train: list[str]
    validation: list[str]
    stats: dict[str, int] = field(default_factory=dict)


def clean(text: str) -> str:
    """NFKC-normalise, drop control characters, collapse runs of spaces, trim lines."""
    text = unicodedata.normalize("NFKC", text)
    text = _CONTROL.sub("", text)
    lines = [_SPACES.sub(" ", line).strip() for line in text.splitlines()]
    return "\n".join(line for line in lines if line).strip()


def _files(path: str) -> list[str]:
    if os.path.isdir(path):
        found = sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files
                       if f.endswith((".txt", ".jsonl", ".json", ".md")))
        if not found:
            raise DataError(f"data: no .txt or .jsonl files under {path}")
        return found
    if not os.path.isfile(path):
        raise DataError(f"data: {path} does not exist on this node")
    return [path]


def read_documents(path: str, *, fmt: str = "auto", text_field: str = "text") -> list[str]:
    """Raw documents: blank-line separated paragraphs of text files, or one field of jsonl rows."""
    docs: list[str] = []
    for f in _files(path):
        kind = fmt if fmt != "auto" else ("jsonl" if f.endswith((".jsonl", ".json")) else "text")
        with open(f, encoding="utf-8", errors="replace") as fh:
            if kind == "text":
                docs.extend(_BLANKS.split(fh.read()))
                continue
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError as exc:
                    raise DataError(f"data: {f} line {n} is not valid JSON ({exc.msg})") from None
                if not isinstance(row, dict) or not isinstance(row.get(text_field), str):
                    raise DataError(f"data: {f} line {n} has no string field {text_field!r}")
                docs.append(row[text_field])
    return docs


def prepare(path: str, *, fmt: str = "auto", text_field: str = "text", dedupe: bool = True, min_chars: int = 16,
            validation_fraction: float = 0.05, max_documents: int | None = None, seed: int = 0) -> Splits:
    """Clean, filter, de-duplicate and split the documents at ``path`` (deterministic for a seed)."""
    raw = read_documents(path, fmt=fmt, text_field=text_field)
    seen: set[bytes] = set()
    docs: list[str] = []
    dropped_short = dropped_dup = 0
    for d in raw:
        c = clean(d)
        if len(c) < min_chars:
            dropped_short += 1
            continue
        if dedupe:
            key = hashlib.blake2b(" ".join(c.lower().split()).encode(), digest_size=16).digest()
            if key in seen:
                dropped_dup += 1
                continue
            seen.add(key)
        docs.append(c)
    if max_documents:
        docs = docs[:max_documents]
    if len(docs) < 2:
        raise DataError(f"data: {path} has {len(docs)} usable document(s) after cleaning; need at least 2")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(docs) * validation_fraction))
    val = [docs[i] for i in sorted(order[:n_val])]
    train = [docs[i] for i in sorted(order[n_val:])]
    stats = {"raw": len(raw), "kept": len(docs), "dropped_short": dropped_short, "dropped_duplicates": dropped_dup,
             "train": len(train), "validation": len(val)}
    return Splits(train=train, validation=val, stats=stats)
