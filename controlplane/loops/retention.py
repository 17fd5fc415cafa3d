"""Retention: keep tables bounded: recent status seqs per node, logs of recent attempts, recent
audit events (deleted in small batches, so no statement holds locks for long)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import aliased

from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import AttemptRow, EventRow, LogChunkRow, StatusSeenRow

KEEP_SEQS = 10_000  # replays older than this re-apply harmlessly (exited ranks ignore reports)


@retry_deadlocks
def trim_status_seen(db: Database, keep: int = KEEP_SEQS) -> int:
    """Delete each node's applied status seqs older than its newest ``keep``; returns rows deleted."""
    newer = aliased(StatusSeenRow)
    newest = (select(func.max(newer.seq)).where(newer.node_id == StatusSeenRow.node_id)
              .scalar_subquery())
    with db.tx() as s:
        res = s.execute(delete(StatusSeenRow).where(StatusSeenRow.seq < newest - keep))
        return res.rowcount or 0


RETENTION_BATCH = 5_000  # rows deleted per statement: no long transaction, no huge lock


@retry_deadlocks
def _delete_batch(db: Database, ids) -> int:  # noqa: ANN001
    with db.tx() as s:
        return s.execute(ids).rowcount or 0


def trim_logs(db: Database, older_than_s: float) -> int:
    """Delete the log chunks of attempts that ended more than ``older_than_s`` ago."""
    cutoff = now() - older_than_s
    ended = select(AttemptRow.id).where(AttemptRow.finished_at < cutoff)
    batch = select(LogChunkRow.id).where(LogChunkRow.attempt_id.in_(ended)).limit(RETENTION_BATCH)
    return _drain(db, delete(LogChunkRow).where(LogChunkRow.id.in_(batch)))


def trim_events(db: Database, older_than_s: float) -> int:
    """Delete audit events older than ``older_than_s``."""
    batch = select(EventRow.id).where(EventRow.ts < now() - older_than_s).limit(RETENTION_BATCH)
    return _drain(db, delete(EventRow).where(EventRow.id.in_(batch)))


def _drain(db: Database, stmt) -> int:  # noqa: ANN001
    total = 0
    while True:
        n = _delete_batch(db, stmt)
        total += n
        if n < RETENTION_BATCH:
            return total
