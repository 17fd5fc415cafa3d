"""Per-job usage roll-up and retention (run by the lease holder).

- ``roll_up``: every hour that closed more than ``GRACE_S`` ago gets one row per slice (sums,
  counts and maximum of its minute rows exactly; p95 = the 95th percentile, nearest rank, of the
  minutes' p95 values), in short steps (one hour, at most ``SLICES_PER_STEP`` slices each, with
  the watermark moved in the same transaction), stopping after ``budget_s``: a backlog never
  holds the scheduling loop long. PostgreSQL aggregates in SQL, SQLite in Python.
- ``trim_minutes``: minute rows of rolled-up hours older than the minute retention go.
- ``trim``: every row older than the retention goes.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict

from sqlalchemy import delete, func, select, text

from controlplane.core.rightsize import percentile
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.usage import HOUR_S, HOURLY, JobUsageRow, UsageWatermarkRow
from controlplane.loops.retention import RETENTION_BATCH, _drain
from controlplane.services.usage_buffer import COLUMNS, MERGE, upsert_rows

GRACE_S = 300.0  # later samples of a rolled-up hour still merge into it (usage_buffer)
SLICES_PER_STEP = 2000
U = JobUsageRow
PG_ROLL_UP = text(
    f"INSERT INTO job_usage ({', '.join(COLUMNS)}) "
    "SELECT slice_id, min(job_id), CAST(:hour AS FLOAT8), 3600, sum(samples), sum(util_samples), sum(util_sum), "
    "percentile_disc(0.95) WITHIN GROUP (ORDER BY util_p95), sum(memory_sum), max(memory_max) "
    "FROM job_usage WHERE resolution_s < 3600 AND ts >= :hour AND ts < :hour + 3600 "
    "AND slice_id BETWEEN :lo AND :hi GROUP BY slice_id "
    f"ON CONFLICT (slice_id, resolution_s, ts) DO UPDATE SET {MERGE}")


def _hour(ts: float) -> float:
    return math.floor(ts / HOUR_S) * HOUR_S


def roll_up(db: Database, now: float, *, grace_s: float = GRACE_S, budget_s: float = 2.0) -> int:
    """Roll up closed hours for up to ``budget_s`` seconds; returns the steps done."""
    target = _hour(now - grace_s)  # every hour before this one has closed
    deadline = time.monotonic() + budget_s
    steps = 0
    while time.monotonic() < deadline and _step(db, target):
        steps += 1
    return steps


def _fine(hour: float) -> tuple:
    return U.resolution_s < HOUR_S, U.ts >= hour, U.ts < hour + HOUR_S


@retry_deadlocks
def _step(db: Database, target: float) -> bool:
    """The next slices of the watermark's hour, or move the watermark on; False: nothing to do."""
    with db.tx() as s:
        mark = s.get(UsageWatermarkRow, HOURLY, with_for_update=True)
        if mark is None:
            first = s.scalar(select(func.min(U.ts)).where(U.resolution_s < HOUR_S))
            if first is None:
                return False
            mark = UsageWatermarkRow(name=HOURLY, ts=_hour(first), slice_id=0)
            s.add(mark)
        hour = mark.ts
        if hour >= target:
            return False
        ids = list(s.scalars(select(U.slice_id).distinct().where(*_fine(hour), U.slice_id > mark.slice_id)
                             .order_by(U.slice_id).limit(SLICES_PER_STEP)))
        if not ids:  # the hour is done: on to the next hour that has rows (or up to the target)
            nxt = s.scalar(select(func.min(U.ts)).where(U.resolution_s < HOUR_S, U.ts >= hour + HOUR_S))
            mark.ts, mark.slice_id = (min(target, _hour(nxt)) if nxt is not None else target), 0
            return True
        if db.is_postgres:
            s.execute(PG_ROLL_UP, {"hour": hour, "lo": ids[0], "hi": ids[-1]})
        else:
            upsert_rows(db, s, _hourly_rows(s, hour, (*_fine(hour), U.slice_id.between(ids[0], ids[-1]))))
        mark.slice_id = ids[-1]
        return True


def _hourly_rows(s, hour: float, fine: tuple) -> list[dict]:  # noqa: ANN001
    groups: dict[int, list] = defaultdict(list)
    for row in s.execute(select(U.slice_id, U.job_id, U.samples, U.util_samples, U.util_sum, U.util_p95,
                                U.memory_sum, U.memory_max).where(*fine)):
        groups[row.slice_id].append(row)
    rows = []
    for slice_id, xs in groups.items():
        p95s = [x.util_p95 for x in xs if x.util_p95 is not None]
        rows.append({"slice_id": slice_id, "job_id": xs[0].job_id, "ts": float(hour), "resolution_s": HOUR_S,
                     "samples": sum(x.samples for x in xs), "util_samples": sum(x.util_samples for x in xs),
                     "util_sum": sum(x.util_sum for x in xs),
                     "util_p95": percentile(p95s, 95) if p95s else None,
                     "memory_sum": sum(x.memory_sum for x in xs), "memory_max": max(x.memory_max for x in xs)})
    return rows


def trim_minutes(db: Database, now: float, keep_s: float) -> int:
    """Delete minute rows older than ``keep_s`` whose hour is rolled up; rows deleted."""
    with db.read() as s:
        mark = s.get(UsageWatermarkRow, HOURLY)
    if mark is None:
        return 0
    cutoff = min(mark.ts, _hour(now - keep_s))
    batch = select(U.id).where(U.resolution_s < HOUR_S, U.ts < cutoff).limit(RETENTION_BATCH)
    return _drain(db, delete(U).where(U.id.in_(batch)))


def trim(db: Database, now: float, retention_s: float) -> int:
    """Delete usage rows whose bucket started more than ``retention_s`` ago; rows deleted."""
    batch = select(U.id).where(U.ts < now - retention_s).limit(RETENTION_BATCH)
    return _drain(db, delete(U).where(U.id.in_(batch)))
