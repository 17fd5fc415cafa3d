"""Bounded first-in first-out queue kept on disk (JSON lines) for replay after an outage.

Status reports go in an unbounded one (none may be lost); telemetry in one bounded to a window
(the oldest are dropped, and counted). Appends are one line; acknowledged items are removed by
an atomic rewrite, so a restart resumes with exactly what was not yet delivered.
"""

from __future__ import annotations

import json
import os
import threading
from collections import deque
from pathlib import Path
from typing import Any


class DiskQueue:
    def __init__(self, path: Path, max_items: int | None = None) -> None:
        self.path = Path(path)
        self.max_items = max_items
        self.dropped = 0
        self._lock = threading.Lock()
        self._items: deque[Any] = deque()
        self._load()

    def _load(self) -> None:
        try:
            lines = self.path.read_text().splitlines()
        except FileNotFoundError:
            return
        for line in lines:
            try:
                self._items.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a line cut by a crash mid-append
        self._trim()

    def _trim(self) -> bool:
        if self.max_items is None or len(self._items) <= self.max_items:
            return False
        while len(self._items) > self.max_items:
            self._items.popleft()
            self.dropped += 1
        return True

    def _rewrite(self) -> None:
        tmp = self.path.with_name(self.path.name + ".tmp")
        with open(tmp, "w") as fh:
            for item in self._items:
                fh.write(json.dumps(item) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)

    def push(self, item: Any) -> None:
        self.extend([item])

    def extend(self, items: list[Any]) -> None:
        if not items:
            return
        with self._lock:
            self._items.extend(items)
            if self._trim():
                self._rewrite()
                return
            with open(self.path, "a") as fh:
                for item in items:
                    fh.write(json.dumps(item) + "\n")
                fh.flush()
                os.fsync(fh.fileno())

    def peek(self, n: int) -> list[Any]:
        with self._lock:
            return [self._items[i] for i in range(min(n, len(self._items)))]

    def pop(self, n: int) -> None:
        """Remove the ``n`` oldest items (after the server acknowledged them)."""
        with self._lock:
            for _ in range(min(n, len(self._items))):
                self._items.popleft()
            self._rewrite()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
