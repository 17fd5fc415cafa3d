"""The ``job_usage`` table: each job member's measured use of each of its slices, per bucket.

One row per (slice, resolution, bucket start): a minute (``GPUPOOL_USAGE_BUCKET_S``) and, once
its hour has closed, an hour (controlplane/loops/usage_retention.py). Minute rows are kept
``GPUPOOL_USAGE_MINUTE_RETENTION_S`` for charts; reports read hourly rows before the watermark
(``usage_watermarks``: every hour before it is rolled up) and minute rows after it, so a range of
months scans hours, not minutes, and nothing counts twice. Sums and counts are stored rather than
means, so partial rows of one bucket (two replicas, a flush at shutdown) merge exactly; the p95
of a merged bucket is the larger of the two (an upper bound).
Utilisation is the share of the whole accelerator in percent (as the agent reports it, 0-100);
memory is MiB. Added by migration 0007.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Float, ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.functions import GenericFunction

from controlplane.db.base import Base

BigInt = BigInteger().with_variant(Integer(), "sqlite")
HOUR_S = 3600
HOURLY = "hourly"  # the roll-up's watermark row


class JobUsageRow(Base):
    """Measured use of one slice during one bucket [ts, ts + resolution_s)."""

    __tablename__ = "job_usage"
    __table_args__ = (UniqueConstraint("slice_id", "resolution_s", "ts", name="uq_job_usage_bucket"),
                      Index("ix_job_usage_job_ts", "job_id", "ts"),
                      Index("ix_job_usage_ts", "ts"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    slice_id: Mapped[int] = mapped_column(ForeignKey("slices.id", ondelete="CASCADE"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    ts: Mapped[float] = mapped_column(Float)  # bucket start, epoch seconds
    resolution_s: Mapped[int] = mapped_column(Integer)  # 60 (a minute) or 3600 once downsampled
    samples: Mapped[int] = mapped_column(Integer)  # heartbeats that carried this slice
    util_samples: Mapped[int] = mapped_column(Integer)  # of which with a utilisation figure
    util_sum: Mapped[float] = mapped_column(Float)  # % of the accelerator, summed
    util_p95: Mapped[float | None] = mapped_column(Float, nullable=True)  # nearest-rank p95
    memory_sum: Mapped[float] = mapped_column(Float)  # MiB, summed
    memory_max: Mapped[float] = mapped_column(Float)  # MiB


class UsageWatermarkRow(Base):
    """Progress of the hourly roll-up: hours before ``ts`` are rolled up for every slice; of the
    hour at ``ts``, slices up to ``slice_id`` are (the roll-up goes in short steps)."""

    __tablename__ = "usage_watermarks"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)  # "hourly"
    ts: Mapped[float] = mapped_column(Float)
    slice_id: Mapped[int] = mapped_column(BigInt, default=0)


def rolled_up(s) -> tuple[float, int]:  # noqa: ANN001
    """(hour, slice id) of the hourly roll-up's progress; (-inf, 0) before the first roll-up."""
    mark = s.get(UsageWatermarkRow, HOURLY)
    return (mark.ts, mark.slice_id) if mark is not None else (float("-inf"), 0)


class greatest(GenericFunction):  # noqa: N801 - SQL function names
    """GREATEST(a, b, ...) on PostgreSQL, MAX(a, b, ...) on SQLite (NULL if any is NULL there)."""

    type = Float()
    inherit_cache = True


class least(GenericFunction):  # noqa: N801
    """LEAST(a, b, ...) on PostgreSQL, MIN(a, b, ...) on SQLite."""

    type = Float()
    inherit_cache = True


@compiles(greatest, "sqlite")
def _greatest_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN003, ANN202
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element, compiler, **kw):  # noqa: ANN001, ANN003, ANN202
    return f"min({compiler.process(element.clauses, **kw)})"
