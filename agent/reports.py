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
from pathlib import Path
from typing import Any

from agent.buffer import DiskQueue
from agent.client import AgentClient, Rejected
from agent.runtime import logs
from agent.runtime.manager import STREAMS, Job, Runtime
from agent.state import StateDir
from controlplane.core import wire

log = logging.getLogger("gpupool.agent.reports")
STATUS_BATCH = 200
LOG_BATCH_BYTES = 768 * 1024  # of JSON per batch: under the server's 1 MiB body limit


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
        self._next_job = 0  # ship_logs starts each batch at the next job (round robin)
        self.server_log_cap = wire.LogCap()  # what the server keeps of a stream (it says so)

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
        """Send the next chunk of every job's stdout/stderr (raises ServerUnreachable).

        Fair: chunks are taken in rounds, one per job stream each round, starting each batch at
        the next job, so one job's flood never holds back another's output. Bounded: a batch stays under
        LOG_BATCH_BYTES of JSON (NUL bytes and invalid UTF-8 grow up to six-fold when encoded),
        below the server's body limit. A batch the server refuses is retried chunk by chunk, so
        only a chunk refused on its own is skipped.
        """
        if self.runtime is None:
            return
        with self._lock:
            jobs = self.runtime.log_jobs()
            if not jobs:
                return
            self._next_job %= len(jobs)
            order = jobs[self._next_job:] + jobs[:self._next_job]
            self._next_job += 1
            chunks: list[tuple[str, str, int, wire.LogChunk]] = []
            next_offset = {(j.attempt_id, st): j.record["offsets"][st] for j in order for st in STREAMS}
            size, full, progress = 0, False, True
            while progress and not full:  # rounds: each stream with output adds one chunk per round
                progress = False
                for job in order:
                    for stream in STREAMS:
                        path = job.job_dir / f"{stream}.log"
                        offset = self._skip_dropped(path, next_offset[(job.attempt_id, stream)])
                        data, end = logs.read_chunk(path, offset, logs.MAX_CHUNK)
                        if end <= offset:
                            continue
                        chunk = wire.LogChunk(job_id=job.order.job_id, attempt_id=job.attempt_id,
                                              rank=job.order.rank, stream=stream, offset=offset, data=data)
                        encoded = len(chunk.model_dump_json())
                        if chunks and size + encoded > LOG_BATCH_BYTES:
                            full = True
                            break
                        size += encoded
                        chunks.append((job.attempt_id, stream, end, chunk))
                        next_offset[(job.attempt_id, stream)] = end
                        progress = True
                    if full:
                        break
            if not chunks:
                return
            self._send_chunks(chunks)
            self._on_delivered()
            if full:
                self.wake.set()  # more waiting: come back at once

    def _skip_dropped(self, path: Path, offset: int) -> int:
        """Past the head, a backlog longer than what the server keeps starts at the part it keeps
        (the server shows the gap with a marker): a flood costs no bandwidth it would discard."""
        cap = self.server_log_cap
        tail = cap.max_bytes - cap.head_bytes
        if offset < cap.head_bytes:
            return offset
        end = logs.size(path)
        return max(offset, end - tail)

    def _send_chunks(self, chunks: list[tuple[str, str, int, wire.LogChunk]]) -> None:
        try:
            self.client.logs(wire.LogBatch(node_id=self._node_id() or "", chunks=[c[3] for c in chunks]))
        except Rejected as exc:
            if len(chunks) > 1:  # find the one the server cannot take; deliver the others
                for one in chunks:
                    self._send_chunks([one])
                return
            log.error("log chunk of attempt %s (%s at %d) rejected, skipping it: %s", chunks[0][0],
                      chunks[0][1], chunks[0][3].offset, exc)
        for attempt, stream, end, _ in chunks:
            self.runtime.advance_offset(attempt, stream, end)
