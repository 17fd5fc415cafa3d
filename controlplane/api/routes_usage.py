"""/api/v1 usage: a job's measured use and right-sizing, and the chargeback report."""

from __future__ import annotations

import time
from datetime import datetime, timezone

from fastapi import APIRouter, Depends, Query

from controlplane.api.deps import get_db, user
from controlplane.db.database import Database
from controlplane.schemas import JobUsage, UsageReport, problem_responses
from controlplane.schemas.problems import AUTHENTICATED
from controlplane.schemas.usage import ReportGroup
from controlplane.services import reports, usage
from controlplane.services.auth import Principal

router = APIRouter(prefix="/api/v1", tags=["usage"])
DEFAULT_RANGE_S = 30 * 86400.0


def epoch(value: datetime | None) -> float | None:
    """An ISO time as epoch seconds (a time without a zone is UTC)."""
    if value is None:
        return None
    return (value if value.tzinfo else value.replace(tzinfo=timezone.utc)).timestamp()


@router.get("/jobs/{job_id}/usage", response_model=JobUsage,
            responses=problem_responses(*AUTHENTICATED, 404, 422))
def job_usage(job_id: str, since: datetime | None = Query(None, description="only points after this time"),
              who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    """Per slice (attempt, rank, accelerator): utilisation mean and p95, memory mean and max per
    stored bucket; the job's GPU-hours; the right-sized request."""
    return usage.job_usage(db, who, job_id, since=epoch(since))


@router.get("/reports/usage", response_model=UsageReport,
            responses=problem_responses(*AUTHENTICATED, 422))
def usage_report(start: datetime | None = Query(None, alias="from", description="default: 30 days before to"),
                 end: datetime | None = Query(None, alias="to", description="default: now"),
                 by: ReportGroup = Query("team"),
                 who: Principal = Depends(user), db: Database = Depends(get_db)) -> dict:
    """GPU-hours allocated, used and unused (compute), and memory GiB-hours, per group over
    [from, to). Members see their own team's jobs only."""
    stop = epoch(end) or time.time()
    return reports.usage_report(db, who, epoch(start) or stop - DEFAULT_RANGE_S, stop, by)
