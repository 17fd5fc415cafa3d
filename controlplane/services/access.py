"""What a caller may see: another team's job looks unknown (404), never forbidden."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from controlplane.db.models import JobRow
from controlplane.services.errors import NotFound
from controlplane.services.principal import Principal
from controlplane.services.serialize import parse_id


def visible_job(s: Session, who: Principal, job_id: str, *, lock: bool = False) -> JobRow:
    """The job if the caller may see it; 404 otherwise (other teams' ids look unknown)."""
    q = select(JobRow).where(JobRow.id == parse_id(job_id, "job"))
    if lock:
        q = q.with_for_update()
    job = s.scalar(q)
    if job is None or (not who.is_admin and job.team_id != who.team_id):
        raise NotFound(f"no job with id {job_id!r}")
    return job
