"""Delivery of status reports and log chunks: an on-disk outbox, replayed until acknowledged.

Every status report gets the next per-agent ``seq`` and is written to the outbox before any
attempt to send it, so an outage or an agent restart loses none (the server ignores replays by
seq). Log chunks need no outbox: the job's stdout/stderr files are the buffer and the shipped
byte offsets live in the job's record.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.buffer import DiskQueue
from agent.client import AgentClient, Rejected
from agent.runtime import logs
from agent.runtime.manager import STREAMS, Job, Runtime
from agent.state import StateDir
from controlplane.core import wire

log = logging.getLogger("gpupool.agent.reports")
STATUS_BATCH = 200
LOG_BATCH_BYTES = 512 * 1024


class ReportSender:
    def __init__(self, state: StateDir, client: AgentClient, runtime: Runtime | None,
                 node_id: Callable[[], str | None], on_delivered: Callable[[], None] = lambda: None) -> None:
        self.state = state
        self.client = client
        self.runtime = runtime
        self._node_id = node_id
        self._on_delivered = on_delivered
        self.outbox = DiskQueue(state.root / "outbox" / "status.jsonl")
        self.delivered = 0
        self.wake = threading.Event()
        self._lock = threading.Lock()  # peek, send and pop as one step
        self._unknown_stops: set[str] = set()

    def report(self, kind: wire.StatusKind, job: Job, **fields: Any) -> None:
        """Queue a report about ``job`` (the runtime's reporter callback)."""
        self._queue(wire.StatusReport(seq=self.state.next_seq(), job_id=job.order.job_id,
                                      attempt_id=job.attempt_id, rank=job.order.rank, kind=kind,
                                      ts=time.time(), enforcement=job.record.get("enforcement", {}),
                                      **fields))

    def report_unknown_stop(self, order: wire.StopOrder, node: str) -> None:
        """A stop order for an attempt this node never ran: say so once, so its slices are freed."""
        if order.attempt_id in self._unknown_stops:
            return
        self._unknown_stops.add(order.attempt_id)
        self._queue(wire.StatusReport(seq=self.state.next_seq(), job_id=order.job_id,
                                      attempt_id=order.attempt_id, rank=order.rank,
                                      kind=wire.StatusKind.KILLED,
                                      ts=time.time(), reason=f"not running on node {node}"))

    def _queue(self, report: wire.StatusReport) -> None:
        self.outbox.push(report.model_dump(mode="json"))
        self.wake.set()

    def flush_status(self, keep_going: Callable[[], bool] = lambda: True) -> None:
        """Send queued reports in seq order until none is left (raises ServerUnreachable)."""
        while keep_going():
            with self._lock:
                items = self.outbox.peek(STATUS_BATCH)
                if not items:
                    return
                batch = wire.StatusBatch(node_id=self._node_id() or "",
                                         reports=[wire.StatusReport.model_validate(i) for i in items])
                try:
                    self.client.status(batch)
                except Rejected as exc:
                    log.error("status reports rejected, dropping seq %s..%s: %s", items[0]["seq"],
                              items[-1]["seq"], exc)
                self.outbox.pop(len(items))
                self.delivered += len(items)
                self._on_delivered()

    def ship_logs(self) -> None:
        """Send the next chunks of every job's stdout/stderr (raises ServerUnreachable)."""
        if self.runtime is None:
            return
        with self._lock:
            chunks: list[tuple[str, str, int, wire.LogChunk]] = []
            budget = LOG_BATCH_BYTES
            for job in self.runtime.log_jobs():
                for stream in STREAMS:
                    offset = job.record["offsets"][stream]
                    data, end = logs.read_chunk(job.job_dir / f"{stream}.log", offset,
                                                min(budget, logs.MAX_CHUNK))
                    if end > offset:
                        budget -= end - offset
                        chunks.append((job.attempt_id, stream, end, wire.LogChunk(
                            job_id=job.order.job_id, attempt_id=job.attempt_id, rank=job.order.rank,
                            stream=stream, offset=offset, data=data)))
                if budget <= 0:
                    break
            if not chunks:
                return
            try:
                self.client.logs(wire.LogBatch(node_id=self._node_id() or "",
                                               chunks=[c[3] for c in chunks]))
            except Rejected as exc:
                log.error("log chunks rejected, skipping them: %s", exc)
            for attempt, stream, end, _ in chunks:
                self.runtime.advance_offset(attempt, stream, end)
            self._on_delivered()
            if budget <= 0:
                self.wake.set()  # more waiting: come back at once
