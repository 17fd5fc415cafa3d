"""A job's captured stdout/stderr: capped files on the node, read in byte-offset chunks for shipping.

The shim writes each stream through ``CappedLog``: past ``cap`` bytes the file is rewritten to a
truncation marker plus the newest ``cap/2`` bytes. Offsets stay logical (bytes since the job
started), so shipping stays idempotent: ``<stream>.log.meta`` records the logical offset of the
file's first byte (``base``), where the kept output starts (``data_start``) and the file's
inode, so a reader never pairs a new file with old metadata. Stdlib only (the shim imports it).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

MAX_CHUNK = 64 * 1024
MIN_CAP = 4096


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta")


def _open_with_base(path: Path) -> tuple[object | None, int, int]:
    """(open file or None, base, data_start) consistent with each other."""
    for _ in range(50):
        try:
            fh = open(path, "rb")
        except FileNotFoundError:
            return None, 0, 0
        try:
            meta = json.loads(_meta_path(path).read_text())
        except (FileNotFoundError, ValueError):
            return fh, 0, 0
        if meta.get("ino") == os.fstat(fh.fileno()).st_ino:
            return fh, int(meta["base"]), int(meta["data_start"])
        fh.close()  # the shim is between writing the metadata and renaming the new file
        time.sleep(0.002)
    raise OSError(f"{path}: log metadata does not match the file")


def size(path: Path) -> int:
    """The logical end offset of the stream (bytes the job wrote, kept or not)."""
    fh, base, _ = _open_with_base(path)
    if fh is None:
        return 0
    with fh:
        return base + os.fstat(fh.fileno()).st_size


def read_chunk(path: Path, offset: int, max_bytes: int = MAX_CHUNK) -> tuple[str, int]:
    """Text from logical ``offset`` and the offset after it; never splits a UTF-8 character.

    When the cap dropped output that was not shipped yet, reading continues at the truncation
    marker (its own offset), so the reader of the shipped log sees the gap explained.
    """
    fh, base, data_start = _open_with_base(path)
    if fh is None:
        return "", offset
    with fh:
        if offset < base:
            offset = base
        elif offset < data_start:
            offset = data_start  # shipped into what became the marker: continue after it
        fh.seek(offset - base)
        raw = fh.read(max_bytes)
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


class CappedLog:
    """Append-only writer of one stream that keeps at most ``cap`` bytes (0 = no cap)."""

    def __init__(self, path: Path, cap: int = 0) -> None:
        if cap and cap < MIN_CAP:
            raise ValueError(f"log cap must be at least {MIN_CAP} bytes, not {cap}")
        self.path = Path(path)
        self.cap = cap
        self.fh = open(self.path, "ab")
        self.size = os.fstat(self.fh.fileno()).st_size
        self.base = 0

    @property
    def end(self) -> int:
        return self.base + self.size

    def write(self, data: bytes) -> None:
        if self.cap and self.size + len(data) > self.cap:
            self._truncate(data)
            return
        self.fh.write(data)
        self.fh.flush()
        self.size += len(data)

    def _truncate(self, data: bytes) -> None:
        keep = self.cap // 2
        old_tail = b""
        want = keep - len(data)
        if want > 0:
            with open(self.path, "rb") as fh:
                fh.seek(max(0, self.size - want))
                old_tail = fh.read()
        tail = (old_tail + data)[-keep:]
        end = self.end + len(data)
        data_start = end - len(tail)
        marker = (f"\n[gpupool: output truncated on the node: the first {data_start} bytes of this "
                  f"stream are dropped; the newest {len(tail)} are kept (log cap {self.cap} "
                  "bytes)]\n").encode()
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "wb") as fh:
            fh.write(marker + tail)
        base = data_start - len(marker)
        meta = _meta_path(self.path)
        meta_tmp = meta.with_name(meta.name + ".tmp")
        meta_tmp.write_text(json.dumps({"base": base, "data_start": data_start,
                                        "ino": os.stat(tmp).st_ino, "cap": self.cap}))
        os.replace(meta_tmp, meta)
        os.replace(tmp, self.path)
        self.fh.close()
        self.fh = open(self.path, "ab")
        self.base, self.size = base, len(marker) + len(tail)

    def close(self) -> None:
        self.fh.close()
