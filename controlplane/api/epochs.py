"""Assignment long-polls without a query per waiting agent: one task reads every node's epoch
each poll interval (only while someone waits), and waiters compare against that."""

from __future__ import annotations

import asyncio
import time

from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from controlplane.db.database import Database
from controlplane.db.models import NodeRow


class EpochWatcher:
    def __init__(self, db: Database, interval_s: float):
        self.db = db
        self.interval_s = interval_s
        self.epochs: dict[int, int] = {}
        self.read_at = 0.0
        self.waiters = 0
        self._task: asyncio.Task | None = None

    def _read(self) -> dict[int, int]:
        with self.db.read() as s:
            return dict(s.execute(select(NodeRow.id, NodeRow.epoch)).all())

    async def _run(self) -> None:
        try:
            while self.waiters > 0:
                self.epochs = await run_in_threadpool(self._read)
                self.read_at = time.monotonic()
                await asyncio.sleep(self.interval_s)
        finally:
            self._task = None

    async def wait_change(self, node_id: int, epoch: int, timeout: float, disconnected) -> None:  # noqa: ANN001
        """Return when ``node_id``'s epoch differs from ``epoch`` or ``timeout`` passes."""
        deadline = time.monotonic() + timeout
        started = time.monotonic()
        self.waiters += 1
        try:
            if self._task is None:
                self._task = asyncio.create_task(self._run())
            while time.monotonic() < deadline:
                fresh = self.read_at >= started
                if fresh and self.epochs.get(node_id, epoch) != epoch:
                    return
                if await disconnected():
                    return
                await asyncio.sleep(min(self.interval_s, max(0.0, deadline - time.monotonic())))
        finally:
            self.waiters -= 1
