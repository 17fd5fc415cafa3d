"""Run-time limits: a job running longer than its ``max_runtime_s`` is stopped with a clear reason
(one query; the leader runs it with the liveness sweep)."""

from __future__ import annotations

from sqlalchemy import select

from controlplane.core.states import JobState, StopKind
from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import AttemptRow, JobRow
from controlplane.services import lifecycle


@retry_deadlocks
def stop_overdue(db: Database) -> list[int]:
    """Stop every running job past its max_runtime_s (not already stopping); returns their ids."""
    ts = now()
    with db.tx() as s:
        overdue = list(s.scalars(
            select(JobRow).join(AttemptRow, (AttemptRow.job_id == JobRow.id) & AttemptRow.active.is_(True))
            .where(JobRow.status == JobState.RUNNING.value, JobRow.max_runtime_s.is_not(None),
                   JobRow.started_at + JobRow.max_runtime_s < ts, AttemptRow.stop_kind.is_(None))
            .with_for_update(of=JobRow)))
        for job in overdue:
            lifecycle.request_stop(s, job, StopKind.TIMEOUT,
                                   f"ran longer than its max_runtime_s of {job.max_runtime_s:g} s", "system")
        return [job.id for job in overdue]
