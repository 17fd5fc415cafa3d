"""A job's measured usage: per slice (attempt, rank, accelerator) the stored buckets, a summary
(GPU-hours from the chargeback arithmetic) and the right-sizing recommendation."""

from __future__ import annotations

import time

from sqlalchemy import select

from controlplane.core import rightsize
from controlplane.core.requests import request_from_resources
from controlplane.db.database import Database
from controlplane.db.models import AcceleratorRow, AttemptRow, MemberRow, NodeRow, SliceRow
from controlplane.db.usage import HOUR_S, JobUsageRow
from controlplane.services.access import visible_job
from controlplane.services.principal import Principal
from controlplane.services.reports import usage_report
from controlplane.services.serialize import iso

MAX_POINTS = 1440  # per slice; older/finer buckets are merged into wider steps beyond this
U = JobUsageRow


def job_usage(db: Database, who: Principal, job_id: str, *, since: float | None = None,
              max_points: int = MAX_POINTS) -> dict:
    """Usage of every slice the job held (all attempts), its summary and recommendation."""
    now = time.time()
    with db.read() as s:
        job = visible_job(s, who, job_id)
        slices = s.execute(
            select(SliceRow.id, SliceRow.accelerator_uuid, SliceRow.compute_milli, SliceRow.memory_mib,
                   SliceRow.allocated_at, SliceRow.released_at, AttemptRow.number, MemberRow.rank,
                   NodeRow.name.label("node"), AcceleratorRow.model,
                   AcceleratorRow.memory_mib.label("device_memory_mib"))
            .join(MemberRow, MemberRow.id == SliceRow.member_id)
            .join(AttemptRow, AttemptRow.id == MemberRow.attempt_id)
            .join(NodeRow, NodeRow.id == MemberRow.node_id)
            .join(AcceleratorRow, AcceleratorRow.uuid == SliceRow.accelerator_uuid)
            .where(AttemptRow.job_id == job.id).order_by(SliceRow.id)).all()
        rows = s.execute(select(U.slice_id, U.ts, U.resolution_s, U.samples, U.util_samples, U.util_sum,
                                U.util_p95, U.memory_sum, U.memory_max)
                         .where(U.job_id == job.id).order_by(U.ts)).all()
        resources, created, job_pk = (job.spec or {}).get("resources") or {}, job.created_at, job.id
    by_slice = _deduplicated(rows)
    out = []
    buckets = []
    for sl in slices:
        mine = by_slice.get(sl.id, [])
        buckets += [rightsize.BucketUse(sl.accelerator_uuid, r.resolution_s / 60, _p95(r), r.memory_max)
                    for r in mine]
        shown = [r for r in mine if since is None or r.ts + r.resolution_s > since]
        out.append({"attempt": sl.number, "rank": sl.rank, "node": sl.node,
                    "accelerator_uuid": sl.accelerator_uuid, "model": sl.model,
                    "device_memory_mib": sl.device_memory_mib, "compute_milli": sl.compute_milli,
                    "memory_mib": sl.memory_mib, "allocated_at": iso(sl.allocated_at),
                    "released_at": iso(sl.released_at), "points": _points(shown, max_points)})
    basis = rightsize.basis_of(buckets)
    first = min([created, now - 1] + [sl.allocated_at for sl in slices if sl.allocated_at is not None])
    totals = usage_report(db, who, first, now, "job", now=now, job_id=job_pk, timeline=False)["totals"]
    summary = {"minutes": basis.minutes, "util_p95_pct": basis.util_p95_pct,
               "memory_peak_mib": basis.memory_peak_mib,
               **{k: totals[k] for k in ("allocated_gpu_hours", "used_gpu_hours", "unused_gpu_hours",
                                         "allocated_memory_gib_hours", "used_memory_gib_hours")}}
    return {"job_id": str(job_pk), "slices": out, "summary": summary,
            "recommendation": recommendation(resources, slices, basis)}


def _deduplicated(rows: list) -> dict[int, list]:
    """Each slice's rows in time order: minute rows, and hourly rows only for hours whose minutes
    are gone (past the minute retention)."""
    by_slice: dict[int, list] = {}
    fine_hours = {(r.slice_id, r.ts // HOUR_S) for r in rows if r.resolution_s < HOUR_S}
    for r in rows:
        if r.resolution_s < HOUR_S or (r.slice_id, r.ts // HOUR_S) not in fine_hours:
            by_slice.setdefault(r.slice_id, []).append(r)
    return by_slice


def _p95(r) -> float | None:  # noqa: ANN001
    return r.util_p95 if r.util_samples else None


def _points(rows: list, max_points: int) -> list[dict]:
    """Buckets as points; beyond ``max_points``, consecutive ones merge (sums add, maxima max)."""
    group = max(1, -(-len(rows) // max_points))
    points = []
    for i in range(0, len(rows), group):
        xs = rows[i:i + group]
        n, un = sum(x.samples for x in xs), sum(x.util_samples for x in xs)
        p95s = [x.util_p95 for x in xs if x.util_samples]
        points.append({"ts": iso(xs[0].ts), "resolution_s": int(xs[-1].ts + xs[-1].resolution_s - xs[0].ts),
                       "samples": n, "util_mean_pct": sum(x.util_sum for x in xs) / un if un else None,
                       "util_p95_pct": max(p95s) if p95s else None,
                       "memory_mean_mib": sum(x.memory_sum for x in xs) / n if n else 0.0,
                       "memory_max_mib": max(x.memory_max for x in xs)})
    return points


def recommendation(resources: dict, slices: list, basis: rightsize.UsageBasis) -> dict:
    """The right-sized request of a one-accelerator job (``resources``: its spec's), or why not."""
    req = request_from_resources(resources)
    current_gpu = req.gpus if req.gpus else req.gpu_milli / 1000
    current_mem = max((sl.memory_mib for sl in slices), default=req.gpu_memory_mib) if req.gpus == 0 else None
    rule = (f"p95 compute + {rightsize.COMPUTE_MARGIN:.0%} (steps of {rightsize.COMPUTE_STEP_MILLI / 1000:g} GPU), "
            f"peak memory + {rightsize.MEMORY_MARGIN:.0%} (steps of 1 GiB), "
            f"from at least {rightsize.MIN_MINUTES} minutes of use")
    out = {"current_gpu": current_gpu, "current_gpu_memory_mib": current_mem, "gpu": None,
           "gpu_memory_mib": None, "rule": rule, "reason": None}
    if req.gpus > 1 or req.gang > 1:
        out["reason"] = ("multi-GPU and multi-node jobs keep whole GPUs (their parallelism is set by the "
                         "GPU count); see the usage per GPU")
        return out
    if not slices:
        out["reason"] = "the job has not run yet"
        return out
    if basis.minutes < rightsize.MIN_MINUTES:
        out["reason"] = (f"{basis.minutes:.1f} minute(s) of usage so far; right-sizing needs at least "
                         f"{rightsize.MIN_MINUTES}")
        return out
    device = max(sl.device_memory_mib for sl in slices)
    rec = rightsize.recommend(basis.util_p95_pct, basis.memory_peak_mib, device)
    milli = rec.gpu_milli if rec.gpu_milli is not None else round(current_gpu * 1000)
    if milli >= rightsize.WHOLE_MILLI:
        out.update(gpu=1.0, gpu_memory_mib=None)
    else:
        out.update(gpu=milli / 1000, gpu_memory_mib=rec.gpu_memory_mib)
    if rec.gpu_milli is None:
        out["reason"] = "no utilisation was reported for this job; compute kept, memory right-sized"
    return out
