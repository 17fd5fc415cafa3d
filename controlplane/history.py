"""Utilisation and allocation history kept in the database, so charts work without Prometheus.

One row per minute per accelerator model, per queue and for the whole cluster (scope ``model``,
``queue``, ``cluster``), written by the server loops (controlplane/loops/runner.py) and pruned
past a retention window. Replicas may all sample: the (scope, key, ts) unique key and an
insert-or-ignore keep one row per bucket. Table added by migration 0001a.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, Index, Integer, String, UniqueConstraint, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db.base import Base

BUCKET_S = 60
DEFAULT_RETENTION_S = 7 * 24 * 3600
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class UsageSampleRow(Base):
    """Capacity, allocation, use and demand of one scope key during one minute."""

    __tablename__ = "usage_samples"
    __table_args__ = (UniqueConstraint("scope", "key", "ts", name="uq_usage_samples_bucket"),
                      Index("ix_usage_samples_scope_ts", "scope", "ts"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)  # start of the minute, epoch seconds
    scope: Mapped[str] = mapped_column(String(16))  # cluster | model | queue
    key: Mapped[str] = mapped_column(String(160))  # "all" | "nvidia/H100-80GB" | "team/queue"
    capacity_milli: Mapped[int] = mapped_column(BigInt, default=0)  # queue: its guarantee
    allocated_milli: Mapped[int] = mapped_column(BigInt, default=0)
    used_milli: Mapped[int | None] = mapped_column(BigInt, nullable=True)  # from telemetry
    pending_jobs: Mapped[int] = mapped_column(Integer, default=0)
    running_jobs: Mapped[int] = mapped_column(Integer, default=0)


def bucket(ts: float, size: float = BUCKET_S) -> float:
    return float(int(ts // size) * size)


def collect_rows(s, now: float, bucket_s: float = BUCKET_S) -> list[dict]:  # noqa: ANN001
    """The rows describing the pool at ``now`` (not yet written)."""
    from controlplane.metrics_queries import capacity_by_model, queue_usage

    ts = bucket(now, bucket_s)
    models = capacity_by_model(s)
    queues = queue_usage(s, now)
    rows = []
    for m in models:
        rows.append({"ts": ts, "scope": "model", "key": f"{m['vendor']}/{m['model']}",
                     "capacity_milli": m["milli"], "allocated_milli": m["allocated_milli"],
                     "used_milli": int(m["util"] * m["milli"]), "pending_jobs": 0, "running_jobs": 0})
    for q in queues:
        rows.append({"ts": ts, "scope": "queue", "key": f"{q['team']}/{q['name']}",
                     "capacity_milli": q["guarantee_milli"], "allocated_milli": q["allocated_milli"],
                     "used_milli": None, "pending_jobs": q["pending"], "running_jobs": q["running"]})
    rows.append({"ts": ts, "scope": "cluster", "key": "all",
                 "capacity_milli": sum(m["milli"] for m in models),
                 "allocated_milli": sum(m["allocated_milli"] for m in models),
                 "used_milli": sum(int(m["util"] * m["milli"]) for m in models),
                 "pending_jobs": sum(q["pending"] for q in queues),
                 "running_jobs": sum(q["running"] for q in queues)})
    return rows


def sample(db, now: float, *, retention_s: float = DEFAULT_RETENTION_S,  # noqa: ANN001
           bucket_s: float = BUCKET_S) -> int:
    """Write this minute's rows (ignored when already written) and prune old ones; rows written."""
    with db.tx() as s:
        rows = collect_rows(s, now, bucket_s)
        dialect = s.get_bind().dialect.name
        ins = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(UsageSampleRow)
        written = 0
        if rows:
            result = s.execute(ins.values(rows).on_conflict_do_nothing(
                index_elements=["scope", "key", "ts"]).returning(UsageSampleRow.id))
            written = len(result.all())
        s.execute(delete(UsageSampleRow).where(UsageSampleRow.ts < now - retention_s))
    with db.read() as s:
        record_telemetry(db, s)
    return written


def series(db, scope: str, *, since: float, keys: list[str] | None = None) -> dict[str, dict]:  # noqa: ANN001
    """{key: {"ts": [...], "capacity": [...], "allocated": [...], "used": [...], "pending": [...]}}."""
    q = (select(UsageSampleRow).where(UsageSampleRow.scope == scope, UsageSampleRow.ts >= since)
         .order_by(UsageSampleRow.ts))
    if keys:
        q = q.where(UsageSampleRow.key.in_(keys))
    out: dict[str, dict] = {}
    with db.read() as s:
        for r in s.scalars(q):
            d = out.setdefault(r.key, {"ts": [], "capacity": [], "allocated": [], "used": [],
                                       "pending": [], "running": []})
            d["ts"].append(r.ts)
            d["capacity"].append(r.capacity_milli / 1000)
            d["allocated"].append(r.allocated_milli / 1000)
            d["used"].append(None if r.used_milli is None else r.used_milli / 1000)
            d["pending"].append(r.pending_jobs)
            d["running"].append(r.running_jobs)
    return out


RING_POINTS = 60


def record_telemetry(db, s) -> None:  # noqa: ANN001
    """Append each accelerator's latest (ts, util %, memory used MiB) to an in-memory ring.

    Feeds the per-GPU sparklines on the Nodes pages; kept per Database in ``db.cache``.
    """
    from collections import deque

    from controlplane.db.models import SampleRow

    with db.cache_lock:
        ring = db.cache.setdefault("telemetry_ring", {})
    for uuid, tel in s.execute(select(SampleRow.uuid, SampleRow.telemetry)):
        if not tel:
            continue
        points = ring.get(uuid)
        if points is None:
            points = ring[uuid] = deque(maxlen=RING_POINTS)
        ts = tel.get("ts")
        if points and points[-1][0] == ts:
            continue
        points.append((ts, tel.get("gpu_util_pct"), tel.get("memory_used_mib")))


def telemetry_points(db, uuid: str) -> list[tuple]:  # noqa: ANN001
    return list(db.cache.get("telemetry_ring", {}).get(uuid, ()))
