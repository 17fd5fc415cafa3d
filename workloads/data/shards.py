"""Pre-tokenised, memory-mapped token shards: written once as a stream, read by row on every rank.

Each split is a list of shard files of token ids (uint16 or uint32) with a parallel file of
flags (bit 0: the token is a training target, bit 1: a document starts here). Shards hold a
whole number of ``seq_len`` rows, so a row never spans two files. Three layouts:
- ``stream`` (pre-training): documents back to back, cut into rows anywhere;
- ``packed`` (fine-tuning): whole examples packed into rows, never split across rows;
- ``single``: one example per row.
Rows read back as (input_ids, labels, position_ids): labels are -100 off target and at each
document start, and position ids restart at every document, so attention (SDPA, flash) never
crosses a document boundary.
"""

from __future__ import annotations

import json
import mmap
import os
from collections import Counter
from typing import Any, BinaryIO

import numpy as np

TRAINS, DOC_START = 1, 2
MANIFEST = "manifest.json"


def token_dtype(vocab: int) -> Any:
    return np.uint16 if vocab <= 65535 else np.uint32


class ShardWriter:
    """Appends examples of one split to shard files of at most ``shard_tokens`` tokens."""

    def __init__(self, root: str, split: str, *, seq_len: int, shard_tokens: int, dtype: Any, pad_id: int,
                 layout: str, stats: Counter) -> None:
        self.root, self.split, self.L, self.dtype, self.pad, self.layout = root, split, seq_len, dtype, pad_id, layout
        self.capacity = max(shard_tokens // seq_len, 1) * seq_len
        self.shards: list[dict[str, Any]] = []
        self.stats = stats
        self.row_ids: list[int] = []
        self.row_flags: list[int] = []
        self._files: tuple[BinaryIO, BinaryIO] | None = None
        self._in_shard = 0
        self.total = 0

    def add(self, ids: list[int], mask: list[int]) -> None:
        flags = [TRAINS if m else 0 for m in mask]
        flags[0] |= DOC_START
        if self.layout == "stream":
            self._emit(ids, flags)
            return
        if len(ids) > self.L:
            self.stats[f"{self.split}_truncated"] += 1
            ids, flags = ids[: self.L], flags[: self.L]
            if not any(f & TRAINS for f in flags):  # nothing left to learn from
                self.stats[f"{self.split}_dropped_truncated"] += 1
                return
        if self.layout == "single" or len(self.row_ids) + len(ids) > self.L:
            self._close_row()
        self.row_ids += ids
        self.row_flags += flags
        if self.layout == "single":
            self._close_row()

    def _close_row(self) -> None:
        if self.row_ids:
            self._pad_to(self.L - len(self.row_ids), self.row_ids, self.row_flags)
            self._emit(self.row_ids, self.row_flags)
            self.row_ids, self.row_flags = [], []

    def _pad_to(self, n: int, ids: list[int], flags: list[int]) -> None:
        if n > 0:  # padding is its own "document" that trains nothing
            ids += [self.pad] * n
            flags += [DOC_START] + [0] * (n - 1)

    def _emit(self, ids: list[int], flags: list[int]) -> None:
        tokens, marks = np.asarray(ids, dtype=self.dtype), np.asarray(flags, dtype=np.uint8)
        while len(tokens):
            if self._files is None:
                self._open()
            take = min(self.capacity - self._in_shard, len(tokens))
            assert self._files is not None
            tokens[:take].tofile(self._files[0])
            marks[:take].tofile(self._files[1])
            self._in_shard += take
            self.total += take
            tokens, marks = tokens[take:], marks[take:]
            if self._in_shard == self.capacity:
                self._roll()

    def _open(self) -> None:
        name = f"{self.split}-{len(self.shards):05d}"
        self._files = (open(os.path.join(self.root, name + ".tokens"), "wb"),  # noqa: SIM115
                       open(os.path.join(self.root, name + ".flags"), "wb"))  # noqa: SIM115
        self.shards.append({"name": name, "tokens": 0})
        self._in_shard = 0

    def _roll(self) -> None:
        if self._files is not None:
            for f in self._files:
                f.close()
            self.shards[-1]["tokens"] = self._in_shard
            self._files = None

    def close(self) -> dict[str, Any]:
        """Pad the last row, close the files; the split's manifest entry."""
        self._close_row()
        tail = self.total % self.L
        if tail:
            ids, flags = [], []
            self._pad_to(self.L - tail, ids, flags)
            self._emit(ids, flags)
        self._roll()
        return {"shards": self.shards, "rows": self.total // self.L}


class TokenShards:
    """Rows of one split, read from memory-mapped shards (pages dropped from the process after use)."""

    def __init__(self, root: str, manifest: dict[str, Any], split: str) -> None:
        self.root, self.L = root, int(manifest["seq_len"])
        self.dtype = np.dtype(manifest["dtype"])
        entry = manifest["splits"][split]
        self.shards = entry["shards"]
        self.rows = int(entry["rows"])
        self.per_shard = [s["tokens"] // self.L for s in self.shards]
        self.starts = np.cumsum([0] + self.per_shard)
        self._maps: dict[int, tuple[np.memmap, np.memmap]] = {}

    def __len__(self) -> int:
        return self.rows

    def _map(self, i: int) -> tuple[np.memmap, np.memmap]:
        if i not in self._maps:
            base = os.path.join(self.root, self.shards[i]["name"])
            self._maps[i] = (np.memmap(base + ".tokens", dtype=self.dtype, mode="r"),
                             np.memmap(base + ".flags", dtype=np.uint8, mode="r"))
        return self._maps[i]

    def row(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(token ids, flags) of row ``index`` (copies; the mapped pages are released)."""
        if not 0 <= index < self.rows:
            raise IndexError(f"row {index} of {self.rows}")
        shard = int(np.searchsorted(self.starts, index, side="right") - 1)
        off = (index - int(self.starts[shard])) * self.L
        out = []
        for arr in self._map(shard):
            out.append(np.array(arr[off: off + self.L]))
            _release(arr, off * arr.itemsize, self.L * arr.itemsize)
        return out[0], out[1]

    def batch(self, indices: list[int]) -> dict[str, Any]:
        """input_ids, labels and position_ids (torch tensors) of the rows ``indices``."""
        import torch

        ids, flags = zip(*(self.row(i) for i in indices))
        tokens = np.stack(ids).astype(np.int64)
        marks = np.stack(flags)
        # a document's first token is never predicted from the document before it
        target = ((marks & TRAINS) > 0) & ((marks & DOC_START) == 0)
        return {"input_ids": torch.from_numpy(tokens), "labels": torch.from_numpy(np.where(target, tokens, -100)),
                "position_ids": torch.from_numpy(position_ids(marks))}


def position_ids(marks: np.ndarray) -> np.ndarray:
    """Positions that restart at every document start (and at each row's first token)."""
    n = marks.shape[-1]
    ar = np.broadcast_to(np.arange(n), marks.shape)
    starts = (marks & DOC_START).astype(bool)
    starts[..., 0] = True
    return (ar - np.maximum.accumulate(np.where(starts, ar, 0), axis=-1)).astype(np.int64)


def _release(arr: np.memmap, start: int, length: int) -> None:
    """Drop the mapped pages of a read range from this process (the page cache keeps them)."""
    m = getattr(arr, "_mmap", None)
    if m is None or not hasattr(m, "madvise"):
        return
    page = mmap.PAGESIZE
    lo = start // page * page
    try:
        m.madvise(mmap.MADV_DONTNEED, lo, min(start + length - lo, len(m) - lo))
    except (OSError, ValueError):
        pass


def write_manifest(root: str, manifest: dict[str, Any]) -> None:
    tmp = os.path.join(root, MANIFEST + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
    os.replace(tmp, os.path.join(root, MANIFEST))


def read_manifest(root: str) -> dict[str, Any] | None:
    try:
        with open(os.path.join(root, MANIFEST), encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
