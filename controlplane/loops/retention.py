"""Retention: keep bookkeeping tables bounded (only the recent status seqs per node are needed)."""

from __future__ import annotations

from sqlalchemy import delete, func, select
from sqlalchemy.orm import aliased

from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import StatusSeenRow

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
