"""Chargeback: GPU-hours allocated and used per team, queue, user, accelerator model or job.

For a range [start, end):
- allocated = sum over slices of (their allocation [allocated_at, released_at or now) clipped to
  the range, in hours) x compute (1000 milli = 1 GPU), and likewise x memory (GiB-hours);
- used = sum over stored usage buckets of (the bucket clipped to its slice's allocation and to
  the range, in hours) x mean utilisation (% of the accelerator / 100), and likewise x mean memory
  used; ``measured`` = the allocation those buckets cover where a utilisation was reported;
- unused = allocated - used (compute).
Buckets are the hourly rows before the roll-up's watermark and the minute rows after it (never
both). The database sums (two GROUP BY scans: slices, and usage rows by group and time step, the
latter also giving the timeline). Members see only their own team's jobs.
"""

from __future__ import annotations

import time
from typing import get_args

from sqlalchemy import BigInteger, and_, case, cast, distinct, func, literal, or_, select
from sqlalchemy.sql.elements import ColumnElement

from controlplane.db.database import Database
from controlplane.db.models import (AcceleratorRow, AttemptRow, JobRow, MemberRow, QueueRow, SliceRow,
                                    TeamRow, UserRow)
from controlplane.db.usage import HOUR_S, JobUsageRow, greatest, least, rolled_up
from controlplane.schemas.usage import ReportGroup
from controlplane.services.errors import Invalid
from controlplane.services.principal import Principal
from controlplane.services.serialize import iso

GROUPS: tuple[str, ...] = get_args(ReportGroup)  # team, queue, user, model, job
MAX_RANGE_S = 5 * 366 * 86400.0
TIMELINE_POINTS = 200
NICE_STEPS = (1, 5, 15, 30, 60, 300, 900, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 7 * 86400)
U = JobUsageRow
FIGURES = ("allocated_gpu_hours", "used_gpu_hours", "unused_gpu_hours", "measured_gpu_hours",
           "allocated_memory_gib_hours", "used_memory_gib_hours")


def _group_columns(by: str) -> list[ColumnElement]:
    return {"team": [TeamRow.name], "queue": [TeamRow.name, QueueRow.name], "user": [UserRow.name],
            "model": [AcceleratorRow.model], "job": [JobRow.id]}[by]


def _key(by: str, values: tuple) -> str:
    return "/".join(str(v) for v in values) if by == "queue" else str(values[0])


def _joined(q, by: str):  # noqa: ANN001, ANN202
    """Join what the grouping needs from a query that has MemberRow and SliceRow."""
    q = q.join(JobRow, JobRow.id == MemberRow.job_id)
    if by in ("team", "queue"):
        q = q.join(QueueRow, QueueRow.id == JobRow.queue_id).join(TeamRow, TeamRow.id == QueueRow.team_id)
    elif by == "user":
        q = q.join(UserRow, UserRow.id == JobRow.user_id)
    elif by == "model":
        q = q.join(AcceleratorRow, AcceleratorRow.uuid == SliceRow.accelerator_uuid)
    return q


def check_range(start: float, end: float) -> None:
    if not end > start:
        raise Invalid("to", "must be after from")
    if end - start > MAX_RANGE_S:
        raise Invalid("from", "the range may span at most 5 years")


def timeline_step(start: float, end: float, bucket_s: int = 60) -> int:
    """A round step giving at most ~200 points over [start, end), a multiple of the bucket size."""
    want = max((end - start) / TIMELINE_POINTS, bucket_s)
    return next((s for s in NICE_STEPS if s >= want and s % bucket_s == 0), max(NICE_STEPS[-1], bucket_s))


def usage_report(db: Database, who: Principal, start: float, end: float, by: str = "team", *,
                 now: float | None = None, job_id: int | None = None, timeline: bool = True) -> dict:
    """The report for [start, end) grouped ``by``; ``job_id`` restricts it to one job."""
    if by not in GROUPS:
        raise Invalid("by", f"use one of {', '.join(GROUPS)}")
    check_range(start, end)
    now = time.time() if now is None else now
    released = func.coalesce(SliceRow.released_at, now)
    cols = _group_columns(by)

    def scoped(q, usage_rows: bool = False):  # noqa: ANN001, ANN202
        q = _joined(q, by)
        if not who.is_admin:
            q = q.where(JobRow.team_id == who.team_id)
        if job_id is not None:  # through indexed columns: job_usage.job_id, attempts.job_id
            q = q.where(U.job_id == job_id if usage_rows else MemberRow.attempt_id.in_(_attempts_of(job_id)))
        return q

    a_secs = greatest(least(released, end) - greatest(SliceRow.allocated_at, start), 0.0)
    alloc_q = scoped(select(*cols, func.sum(a_secs * SliceRow.compute_milli),
                            func.sum(a_secs * SliceRow.memory_mib), func.count(distinct(MemberRow.job_id)))
                     .select_from(SliceRow).join(MemberRow, MemberRow.id == SliceRow.member_id)
                     .where(SliceRow.allocated_at.is_not(None), SliceRow.allocated_at < end, released > start)
                     ).group_by(*cols)
    u_secs = greatest(least(U.ts + U.resolution_s, released, end) - greatest(U.ts, SliceRow.allocated_at, start), 0.0)
    util = U.util_sum / func.nullif(U.util_samples, 0)
    in_range = (U.ts < end, U.ts > start - HOUR_S, U.ts + U.resolution_s > start)

    rows: dict[str, dict] = {}
    with db.read() as s:
        mark = rolled_up(s)[0]  # before it: hourly rows; from it on: minute rows
        which = (or_(and_(U.resolution_s >= HOUR_S, U.ts < mark), and_(U.resolution_s < HOUR_S, U.ts >= mark))
                 if mark > start - HOUR_S else U.resolution_s < HOUR_S)
        step = _step(s, start, end, (*in_range, which), mark) if timeline else HOUR_S
        slot = cast(U.ts, BigInteger) // literal(step, BigInteger)
        used_q = scoped(select(*cols, slot, func.sum(u_secs * util),
                               func.sum(case((U.util_samples > 0, u_secs * SliceRow.compute_milli), else_=0.0)),
                               func.sum(u_secs * U.memory_sum / func.nullif(U.samples, 0)),
                               func.sum(u_secs * SliceRow.compute_milli))
                        .select_from(U).join(SliceRow, SliceRow.id == U.slice_id)
                        .join(MemberRow, MemberRow.id == SliceRow.member_id).where(*in_range, which),
                        usage_rows=True).group_by(*cols, slot)
        for *key, milli_s, mib_s, jobs in s.execute(alloc_q):
            r = _row(rows, _key(by, tuple(key)))
            r["jobs"] = int(jobs)
            r["allocated_gpu_hours"] = (milli_s or 0.0) / 1000 / 3600
            r["allocated_memory_gib_hours"] = (mib_s or 0.0) / 1024 / 3600
        line: dict[int, list[float]] = {}
        for *key, n, util_s, measured_s, mem_s, held_s in s.execute(used_q):
            r = _row(rows, _key(by, tuple(key)))
            r["used_gpu_hours"] += (util_s or 0.0) / 100 / 3600
            r["measured_gpu_hours"] += (measured_s or 0.0) / 1000 / 3600
            r["used_memory_gib_hours"] += (mem_s or 0.0) / 1024 / 3600
            point = line.setdefault(int(n), [0.0, 0.0])
            point[0] += (held_s or 0.0) / 1000 / step
            point[1] += (util_s or 0.0) / 100 / step
    for r in rows.values():
        r["unused_gpu_hours"] = r["allocated_gpu_hours"] - r["used_gpu_hours"]
    items = sorted(rows.values(), key=lambda r: (-r["allocated_gpu_hours"], r["key"]))
    totals = {f: sum(r[f] for r in items) for f in FIGURES}
    totals["jobs"] = sum(r["jobs"] for r in items) if by != "model" else _job_count(db, who, start, end, now, job_id)
    slots = sorted(line)
    return {"from": iso(start), "to": iso(end), "by": by, "generated_at": iso(now), "rows": items,
            "totals": totals,
            "timeline": {"step_s": step, "ts": [float(n * step) for n in slots],
                         "allocated_gpus": [line[n][0] for n in slots],
                         "used_gpus": [line[n][1] for n in slots]} if timeline else None}


def _step(s, start: float, end: float, where: tuple, mark: float) -> int:  # noqa: ANN001
    """The timeline's step: it suits the span the data covers within the range (minutes of a
    fresh pool, months of a busy one), never finer than the buckets (index reads only)."""
    first = s.scalar(select(func.min(U.ts)).where(*where))
    if first is None:
        return 60
    last = s.scalar(select(func.max(U.ts)).where(*where))
    finest = HOUR_S if last < mark else (
        s.scalar(select(U.resolution_s).where(U.resolution_s < HOUR_S).limit(1)) or 60)
    return timeline_step(max(first, start), min(last + finest, end), int(finest))


def _attempts_of(job_id: int):  # noqa: ANN202
    return select(AttemptRow.id).where(AttemptRow.job_id == job_id)


def _row(rows: dict[str, dict], key: str) -> dict:
    if key not in rows:
        rows[key] = {"key": key, "jobs": 0, **{f: 0.0 for f in FIGURES}}
    return rows[key]


def _job_count(db: Database, who: Principal, start: float, end: float, now: float, job_id: int | None) -> int:
    """Distinct jobs with an allocation in the range (a job may span several models)."""
    released = func.coalesce(SliceRow.released_at, now)
    q = (select(func.count(distinct(MemberRow.job_id))).select_from(SliceRow)
         .join(MemberRow, MemberRow.id == SliceRow.member_id).join(JobRow, JobRow.id == MemberRow.job_id)
         .where(SliceRow.allocated_at.is_not(None), SliceRow.allocated_at < end, released > start))
    if not who.is_admin:
        q = q.where(JobRow.team_id == who.team_id)
    if job_id is not None:
        q = q.where(MemberRow.attempt_id.in_(_attempts_of(job_id)))
    with db.read() as s:
        return int(s.scalar(q) or 0)
