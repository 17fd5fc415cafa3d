"""Per-job usage from heartbeats: held in memory (bounded), written per bucket by the loops.

Heartbeats are the hot path (1,000 nodes x 8 GPUs every 10 s): ``record`` only appends each
slice's sample to an in-process list, no database work. ``flush`` (every loop iteration of every
replica, and once more at shutdown) takes the samples of the buckets that have closed, keeps
only those whose (attempt, node, accelerator) is a slice of that attempt's member on that node
(an agent cannot write usage for another node's jobs), aggregates them per (slice, bucket) and
upserts the rows (PostgreSQL: one statement per 10,000 rows). A bucket already written in part
(another replica, a flush at shutdown) merges: counts and sums add, maxima take the larger.
"""

from __future__ import annotations

import logging
import math
import threading
from collections import defaultdict
from dataclasses import dataclass, field

from sqlalchemy import case, select, text

from controlplane.core import wire
from controlplane.core.rightsize import percentile
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import MemberRow, SliceRow
from controlplane.db.usage import HOUR_S, JobUsageRow, greatest, rolled_up

log = logging.getLogger("gpupool.usage")
MAX_PENDING = 500_000  # samples held (~10 min of 8,000 GPUs at 10 s) while the database is away
ID_CHUNK = 1000  # attempt ids per IN (...) when resolving slices
MAX_KNOWN_SLICES = 200_000  # (node, attempt, accelerator) -> slice, cached (a slice never moves)
MAX_MIB = float(2**40)
Sample = tuple[float, int, int, str, float | None, float]  # ts, node, attempt, uuid, util %, MiB


@dataclass(slots=True)
class _Pending:
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: list[Sample] = field(default_factory=list)
    dropped: int = 0
    slices: dict[tuple[int, int, str], tuple[int, int]] = field(default_factory=dict)


def _pending(db: Database) -> _Pending:
    buf = db.cache.get("usage-buffer")
    if buf is None:
        with db.cache_lock:
            buf = db.cache.setdefault("usage-buffer", _Pending())
    return buf


def _finite(v: float | None, top: float) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return min(max(float(v), 0.0), top)


def record(db: Database, node_id: int, usage: list[wire.SliceUsage], ts: float) -> None:
    """Keep this heartbeat's per-slice samples until their bucket closes (no database work)."""
    if not usage:
        return
    rows: list[Sample] = []
    for u in usage:
        a = u.attempt_id
        if not (a.isascii() and a.isdigit() and len(a) < 19) or len(u.accelerator_uuid) > 128:
            continue
        rows.append((ts, node_id, int(a), u.accelerator_uuid, _finite(u.sm_util_pct, 100.0),
                     _finite(u.memory_used_mib, MAX_MIB) or 0.0))
    buf = _pending(db)
    with buf.lock:
        room = MAX_PENDING - len(buf.samples)
        if room < len(rows):
            if not buf.dropped:
                log.warning("per-job usage: %d samples wait for the database; dropping new ones",
                            MAX_PENDING)
            buf.dropped += len(rows) - max(room, 0)
            rows = rows[:max(room, 0)]
        buf.samples.extend(rows)


def flush(db: Database, now: float, bucket_s: int = 60, *, final: bool = False) -> int:
    """Write the buckets that closed before ``now`` (all of them when ``final``); rows written.

    On a database error the samples go back into the buffer (bounded) for the next call.
    """
    buf = _pending(db)
    cut = math.inf if final else math.floor(now / bucket_s) * bucket_s
    with buf.lock:
        if not buf.samples or min(buf.samples[0][0], buf.samples[-1][0]) >= cut:
            return 0
        closed = [x for x in buf.samples if x[0] < cut]
        buf.samples = [x for x in buf.samples if x[0] >= cut]
    try:
        return _write(db, closed, bucket_s)
    except Exception:
        with buf.lock:
            keep = closed[-max(0, MAX_PENDING - len(buf.samples)):] if MAX_PENDING > len(buf.samples) else []
            buf.dropped += len(closed) - len(keep)
            buf.samples[:0] = keep
        raise


def aggregate(samples: list[Sample], bucket_s: int) -> dict[tuple[int, int, str, float], dict]:
    """(node, attempt, uuid, bucket start) -> the bucket's counts, sums, p95 and maximum."""
    groups: dict[tuple[int, int, str, float], list[Sample]] = defaultdict(list)
    for x in samples:
        groups[(x[1], x[2], x[3], math.floor(x[0] / bucket_s) * bucket_s)].append(x)
    out = {}
    for key, xs in groups.items():
        utils = [x[4] for x in xs if x[4] is not None]
        mems = [x[5] for x in xs]
        out[key] = {"samples": len(xs), "util_samples": len(utils), "util_sum": float(sum(utils)),
                    "util_p95": percentile(utils, 95) if utils else None,
                    "memory_sum": float(sum(mems)), "memory_max": max(mems)}
    return out


@retry_deadlocks
def _write(db: Database, samples: list[Sample], bucket_s: int) -> int:
    buckets = aggregate(samples, bucket_s)
    known = _pending(db).slices
    with db.tx() as s:
        missing = sorted({k[1] for k in buckets if k[:3] not in known})
        for i in range(0, len(missing), ID_CHUNK):
            q = (select(MemberRow.node_id, MemberRow.attempt_id, SliceRow.accelerator_uuid, SliceRow.id,
                        MemberRow.job_id)
                 .join(MemberRow, MemberRow.id == SliceRow.member_id)
                 .where(MemberRow.attempt_id.in_(missing[i:i + ID_CHUNK])))
            if len(known) > MAX_KNOWN_SLICES:
                known.clear()
            for node, attempt, uuid, slice_id, job_id in s.connection().execute(q):
                known[(node, attempt, uuid)] = (slice_id, job_id)  # never changes: cache it
        rows = []
        for (node, attempt, uuid, ts), stats in buckets.items():
            hit = known.get((node, attempt, uuid))
            if hit is not None:
                rows.append({"slice_id": hit[0], "job_id": hit[1], "ts": float(ts),
                             "resolution_s": int(bucket_s), **stats})
        if len(rows) < len(buckets):
            log.debug("ignored usage of %d (attempt, accelerator) pairs that are no slice of the "
                      "reporting node", len(buckets) - len(rows))
        upsert_rows(db, s, rows + _late(rows, rolled_up(s)))
    return len(rows)


def _late(rows: list[dict], mark: tuple[float, int]) -> list[dict]:
    """Rows of hours already rolled up (a late flush): their figures merged into those hours."""
    late: dict[tuple[int, float], dict] = {}
    for r in rows:
        hour = math.floor(r["ts"] / HOUR_S) * HOUR_S
        if not (hour < mark[0] or (hour == mark[0] and r["slice_id"] <= mark[1])):
            continue
        h = late.get((r["slice_id"], hour))
        if h is None:
            late[(r["slice_id"], hour)] = {**r, "ts": float(hour), "resolution_s": HOUR_S}
            continue
        for k in ("samples", "util_samples", "util_sum", "memory_sum"):
            h[k] += r[k]
        h["memory_max"] = max(h["memory_max"], r["memory_max"])
        h["util_p95"] = max((p for p in (h["util_p95"], r["util_p95"]) if p is not None), default=None)
    return list(late.values())


COLUMNS = ("slice_id", "job_id", "ts", "resolution_s", "samples", "util_samples", "util_sum", "util_p95",
           "memory_sum", "memory_max")
PG_TYPES = ("BIGINT", "BIGINT", "FLOAT8", "INTEGER", "INTEGER", "INTEGER", "FLOAT8", "FLOAT8", "FLOAT8",
            "FLOAT8")
MERGE = ("samples = job_usage.samples + EXCLUDED.samples, "
         "util_samples = job_usage.util_samples + EXCLUDED.util_samples, "
         "util_sum = job_usage.util_sum + EXCLUDED.util_sum, "
         "memory_sum = job_usage.memory_sum + EXCLUDED.memory_sum, "
         "memory_max = GREATEST(job_usage.memory_max, EXCLUDED.memory_max), "
         "util_p95 = GREATEST(job_usage.util_p95, EXCLUDED.util_p95)")  # GREATEST skips NULLs
PG_UPSERT = text(
    f"INSERT INTO job_usage ({', '.join(COLUMNS)}) SELECT * FROM unnest("
    + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in zip(COLUMNS, PG_TYPES))
    + f") ON CONFLICT (slice_id, resolution_s, ts) DO UPDATE SET {MERGE}")
PG_BATCH = 10_000


def upsert_rows(db: Database, s, rows: list[dict]) -> None:  # noqa: ANN001
    """Insert bucket rows, merging into rows already there. PostgreSQL: one statement per 10,000
    rows (arrays through unnest); SQLite: one executemany."""
    if not rows:
        return
    if db.is_postgres:
        for i in range(0, len(rows), PG_BATCH):
            part = rows[i:i + PG_BATCH]
            s.execute(PG_UPSERT, {c: [r[c] for r in part] for c in COLUMNS})
        return
    s.connection().execute(_sqlite_upsert(db), rows)


def _sqlite_upsert(db: Database):  # noqa: ANN202
    stmt = db.cache.get(("usage-upsert",))
    if stmt is None:
        from sqlalchemy.dialects.sqlite import insert

        t = JobUsageRow.__table__
        ins = insert(t)
        ex = ins.excluded
        stmt = ins.on_conflict_do_update(
            index_elements=["slice_id", "resolution_s", "ts"],
            set_={"samples": t.c.samples + ex.samples, "util_samples": t.c.util_samples + ex.util_samples,
                  "util_sum": t.c.util_sum + ex.util_sum, "memory_sum": t.c.memory_sum + ex.memory_sum,
                  "memory_max": greatest(t.c.memory_max, ex.memory_max),
                  "util_p95": case((t.c.util_p95.is_(None), ex.util_p95), (ex.util_p95.is_(None), t.c.util_p95),
                                   else_=greatest(t.c.util_p95, ex.util_p95))})
        db.cache[("usage-upsert",)] = stmt
    return stmt
