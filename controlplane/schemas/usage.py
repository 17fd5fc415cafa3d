"""Per-job usage, right-sizing and chargeback reports as the API answers them (and as CSV)."""

from __future__ import annotations

import csv
import io
from typing import Literal

from pydantic import ConfigDict, Field

from controlplane.schemas.base import ApiModel, Timestamp

ReportGroup = Literal["team", "queue", "user", "model", "job"]


class UsagePoint(ApiModel):
    """One stored bucket of one slice (merged with its neighbours on long series)."""

    ts: Timestamp
    resolution_s: int
    samples: int
    util_mean_pct: float | None = None  # % of the whole accelerator; null: not reported
    util_p95_pct: float | None = None
    memory_mean_mib: float
    memory_max_mib: float


class SliceUsageSeries(ApiModel):
    """The usage of one slice the job held: an attempt's member (rank) on one accelerator."""

    attempt: int
    rank: int
    node: str
    accelerator_uuid: str
    model: str
    device_memory_mib: int
    compute_milli: int
    memory_mib: int
    allocated_at: Timestamp | None = None
    released_at: Timestamp | None = None
    points: list[UsagePoint] = []


class UsageSummary(ApiModel):
    """The whole job: the right-sizing basis and its GPU-hours (the chargeback arithmetic)."""

    minutes: float
    util_p95_pct: float | None = None
    memory_peak_mib: float
    allocated_gpu_hours: float
    used_gpu_hours: float
    unused_gpu_hours: float
    allocated_memory_gib_hours: float
    used_memory_gib_hours: float


class RightSizing(ApiModel):
    """The request the job's observed use calls for; ``gpu`` null with a ``reason`` when none."""

    current_gpu: float
    current_gpu_memory_mib: int | None = None
    gpu: float | None = None
    gpu_memory_mib: int | None = None
    rule: str
    reason: str | None = None


class JobUsage(ApiModel):
    job_id: str
    slices: list[SliceUsageSeries]
    summary: UsageSummary
    recommendation: RightSizing


class UsageFigures(ApiModel):
    jobs: int
    allocated_gpu_hours: float
    used_gpu_hours: float
    unused_gpu_hours: float  # allocated but not used (compute)
    measured_gpu_hours: float  # allocation covered by utilisation samples
    allocated_memory_gib_hours: float
    used_memory_gib_hours: float


class UsageReportRow(UsageFigures):
    key: str  # team | team/queue | user | model | job id


class UsageTimeline(ApiModel):
    """Mean GPUs allocated (slices with telemetry) and used per step."""

    step_s: int
    ts: list[float]
    allocated_gpus: list[float]
    used_gpus: list[float]


class UsageReport(ApiModel):
    """GPU-hours by group over [from, to) (see controlplane/services/reports.py for the arithmetic)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: Timestamp = Field(alias="from")
    to: Timestamp
    by: ReportGroup
    generated_at: Timestamp
    rows: list[UsageReportRow]
    totals: UsageFigures
    timeline: UsageTimeline | None = None

CSV_COLUMNS = ("key", "jobs", "allocated_gpu_hours", "used_gpu_hours", "unused_gpu_hours",
               "measured_gpu_hours", "allocated_memory_gib_hours", "used_memory_gib_hours")


def report_csv(report: UsageReport) -> str:
    """The report's rows as CSV (first column named after the grouping), figures to 4 decimals."""
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\n")
    w.writerow([report.by, *CSV_COLUMNS[1:]])
    for r in report.rows:
        w.writerow([r.key, r.jobs, *(f"{getattr(r, c):.4f}" for c in CSV_COLUMNS[2:])])
    return out.getvalue()
