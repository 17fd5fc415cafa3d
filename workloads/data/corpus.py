"""Records from local files (text, jsonl/json, parquet, arrow) or a hub data set, as a stream.

Text files are split on blank lines; the other formats go through the ``datasets`` library
(streamed). Documents keep their whitespace (indentation, runs of spaces): only control
characters are removed and line endings normalised. Nothing here holds the corpus in memory.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from typing import Any, Iterator

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_BUILDERS = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".arrow": "arrow",
             ".txt": "text", ".md": "text"}


class DataError(ValueError):
    """Bad input data, with a message that names the file and the problem."""


def clean(text: str) -> str:
    """Drop control characters and normalise line endings; whitespace and indentation are kept."""
    return _CONTROL.sub("", text.replace("\r\n", "\n").replace("\r", "\n")).strip("\n")


def dedupe_key(text: str) -> bytes:
    """Exact duplicates after lower-casing and collapsing whitespace."""
    return hashlib.blake2b(" ".join(text.lower().split()).encode(), digest_size=16).digest()


def data_files(path: str) -> list[str]:
    """The readable files at ``path`` (a file, or every known file under a directory, sorted)."""
    if os.path.isdir(path):
        found = sorted(os.path.join(root, f) for root, _, files in os.walk(path) for f in files
                       if os.path.splitext(f)[1] in _BUILDERS)
        if not found:
            raise DataError(f"data: no .txt, .jsonl, .parquet or .arrow files under {path}")
        return found
    if not os.path.isfile(path):
        raise DataError(f"data: {path} does not exist on this node")
    return [path]


def _text_file(path: str) -> Iterator[dict[str, Any]]:
    """Blank-line separated documents of a text file, read line by line."""
    lines: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            if line.strip():
                lines.append(line)
            elif lines:
                yield {"text": "".join(lines)}
                lines = []
    if lines:
        yield {"text": "".join(lines)}


def _json_lines(path: str) -> Iterator[dict[str, Any]]:
    """jsonl without the ``datasets`` library (a node that lacks it)."""
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError as exc:
                    raise DataError(f"data: cannot read {path} as json (line {n}: {exc})") from None


def _with_datasets(builder: str, path: str, streaming: bool) -> Iterator[dict[str, Any]]:
    try:
        import datasets
    except ImportError:
        if builder != "json":
            raise DataError(f"data: reading {path} needs the datasets library (pip install datasets)") from None
        yield from _json_lines(path)
        return

    try:
        ds = datasets.load_dataset(builder, data_files=path, split="train", streaming=streaming)
        yield from ds
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - pyarrow/json errors: name the file, not a traceback
        first = str(exc).strip().splitlines()
        raise DataError(f"data: cannot read {path} as {builder} ({first[-1] if first else type(exc).__name__})") from None


def records(path: str, *, fmt: str = "auto", streaming: bool = True) -> Iterator[tuple[str, dict[str, Any]]]:
    """(file, row) for every row of the local data at ``path``."""
    for f in data_files(path):
        builder = {"jsonl": "json"}.get(fmt, fmt) if fmt != "auto" else _BUILDERS[os.path.splitext(f)[1]]
        rows = _text_file(f) if builder == "text" else _with_datasets(builder, f, streaming)
        for row in rows:
            yield f, row


def field_of(row: dict[str, Any], name: str, where: str, kind: type = str) -> Any:
    """``row[name]`` when it has the expected type, else a DataError naming the file and field."""
    value = row.get(name) if isinstance(row, dict) else None
    if not isinstance(value, kind):
        raise DataError(f"data: {where} has no {kind.__name__} field {name!r} (fields: {sorted(row)[:8]})")
    return value
