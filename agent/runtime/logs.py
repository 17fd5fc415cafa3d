"""Reads a job's captured stdout/stderr in byte-offset chunks for LogChunk forwarding."""

from __future__ import annotations

from pathlib import Path

MAX_CHUNK = 64 * 1024


def read_chunk(path: Path, offset: int, max_bytes: int = MAX_CHUNK) -> tuple[str, int]:
    """Text from ``offset`` (bytes) and the offset after it; never splits a UTF-8 character."""
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            raw = fh.read(max_bytes)
    except FileNotFoundError:
        return "", offset
    if not raw:
        return "", offset
    # drop an incomplete multi-byte character at the end (it comes with the next chunk)
    cut = len(raw)
    for back in range(1, min(4, len(raw)) + 1):
        byte = raw[-back]
        if byte & 0xC0 == 0x80:
            continue  # continuation byte
        if byte & 0x80:
            need = 2 if byte & 0xE0 == 0xC0 else 3 if byte & 0xF0 == 0xE0 else 4
            if need > back:
                cut = len(raw) - back
        break
    if cut == 0 and len(raw) >= 4:
        cut = len(raw)  # not UTF-8 at all: send it replaced rather than stall
    raw = raw[:cut]
    return raw.decode("utf-8", "replace"), offset + len(raw)


def size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return 0
