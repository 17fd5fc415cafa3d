"""Job logs from stored chunks: tail of the latest attempt's stream, and follow by position."""

from __future__ import annotations

from sqlalchemy import select

from controlplane.core.states import FINAL_STATES
from controlplane.db.database import Database
from controlplane.db.models import AttemptRow, LogChunkRow
from controlplane.services.access import visible_job
from controlplane.services.principal import Principal

Position = tuple[int, int]  # (attempt id, last chunk id read)


def _latest_attempt(s, job_id: int) -> int | None:  # noqa: ANN001
    return s.scalar(select(AttemptRow.id).where(AttemptRow.job_id == job_id)
                    .order_by(AttemptRow.number.desc()).limit(1))


def read(db: Database, who: Principal, job_id: str, *, rank: int = 0,
         tail: int | None = None) -> tuple[str, Position, bool]:
    """The latest attempt's log for ``rank`` (last ``tail`` lines), a follow position, final?"""
    with db.read() as s:
        job = visible_job(s, who, job_id)
        final = job.status in {st.value for st in FINAL_STATES}
        attempt = _latest_attempt(s, job.id)
        if attempt is None:
            return "", (0, 0), final
        rows = s.execute(select(LogChunkRow.id, LogChunkRow.data).where(
            LogChunkRow.attempt_id == attempt, LogChunkRow.rank == rank)
            .order_by(LogChunkRow.id)).all()
    text = "".join(d for _, d in rows)
    last = max((i for i, _ in rows), default=0)
    if tail is not None:
        lines = text.splitlines(keepends=True)
        text = "".join(lines[-tail:]) if tail else ""
    return text, (attempt, last), final


def read_after(db: Database, who: Principal, job_id: str, *, rank: int,
               position: Position) -> tuple[str, Position, bool]:
    with db.read() as s:
        job = visible_job(s, who, job_id)
        final = job.status in {st.value for st in FINAL_STATES}
        attempt, last = position
        latest = _latest_attempt(s, job.id)
        if latest is not None and latest != attempt:
            attempt, last = latest, 0
        if not attempt:
            return "", position, final
        rows = s.execute(select(LogChunkRow.id, LogChunkRow.data).where(
            LogChunkRow.attempt_id == attempt, LogChunkRow.rank == rank, LogChunkRow.id > last)
            .order_by(LogChunkRow.id)).all()
    return "".join(d for _, d in rows), (attempt, max((i for i, _ in rows), default=last)), final
