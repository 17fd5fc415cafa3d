"""Per-job usage retention: buckets older than ``GPUPOOL_USAGE_MINUTE_RETENTION_S`` become one row
per slice and hour; rows older than ``GPUPOOL_USAGE_RETENTION_S`` go. Run by the lease holder.

An hour's row keeps the sums, counts and maximum of its minutes exactly; its p95 is the
95th percentile (nearest rank, weighted by minutes) of the minutes' p95 values. One hour is
rolled up per transaction, at most ``max_hours`` per call, so a backlog never holds the loop long.
"""

from __future__ import annotations

import math
from collections import defaultdict

from sqlalchemy import delete, func, select

from controlplane.core.rightsize import percentile
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.usage import JobUsageRow
from controlplane.loops.retention import RETENTION_BATCH, _drain
from controlplane.services.usage_buffer import upsert_statement

HOUR_S = 3600
U = JobUsageRow


def downsample(db: Database, now: float, keep_s: float, *, max_hours: int = 6) -> int:
    """Roll up the oldest whole hours of fine buckets older than ``keep_s``; hours rolled up."""
    cutoff = math.floor((now - keep_s) / HOUR_S) * HOUR_S
    done = 0
    while done < max_hours and _roll_up_oldest_hour(db, cutoff):
        done += 1
    return done


@retry_deadlocks
def _roll_up_oldest_hour(db: Database, cutoff: float) -> bool:
    with db.tx() as s:
        oldest = s.scalar(select(func.min(U.ts)).where(U.resolution_s < HOUR_S, U.ts < cutoff))
        if oldest is None:
            return False
        start = math.floor(oldest / HOUR_S) * HOUR_S
        fine = (U.resolution_s < HOUR_S, U.ts >= start, U.ts < start + HOUR_S)
        groups: dict[int, list] = defaultdict(list)
        for row in s.execute(select(U.slice_id, U.job_id, U.resolution_s, U.samples, U.util_samples,
                                    U.util_sum, U.util_p95, U.memory_sum, U.memory_max).where(*fine)):
            groups[row.slice_id].append(row)
        rows = []
        for slice_id, xs in groups.items():
            known = [x for x in xs if x.util_p95 is not None]
            rows.append({"slice_id": slice_id, "job_id": xs[0].job_id, "ts": float(start),
                         "resolution_s": HOUR_S, "samples": sum(x.samples for x in xs),
                         "util_samples": sum(x.util_samples for x in xs),
                         "util_sum": sum(x.util_sum for x in xs),
                         "util_p95": percentile([x.util_p95 for x in known], 95,
                                                [x.resolution_s for x in known]) if known else None,
                         "memory_sum": sum(x.memory_sum for x in xs),
                         "memory_max": max(x.memory_max for x in xs)})
        s.connection().execute(upsert_statement(db), rows)
        s.execute(delete(U).where(*fine))
    return True


def trim(db: Database, now: float, retention_s: float) -> int:
    """Delete usage rows whose bucket started more than ``retention_s`` ago; rows deleted."""
    batch = select(U.id).where(U.ts < now - retention_s).limit(RETENTION_BATCH)
    return _drain(db, delete(U).where(U.id.in_(batch)))
