"""Run the what-if: every mode on the same workload and cluster mix, as one JSON-ready dict."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from controlplane.core.resources import Request
from controlplane.core.snapshot import PendingJob, Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.whatif import modes
from controlplane.whatif.cluster import ClusterTemplate
from controlplane.whatif.partitions import LAYOUTS, layout_shares
from controlplane.whatif.replay import QUEUE, SimJob
from controlplane.whatif.rightsize import DEFAULT_MARGIN
from controlplane.whatif.search import Progress, Sizing, demand_at_arrivals, smallest
from controlplane.whatif.workload import NodeRow, Workload

DEFAULT_BOUND_S = 600.0


@dataclass(slots=True)
class ModeRun:
    """One mode: the jobs as it asks for them, what never fits, the sizing found."""

    mode: str
    jobs: list[SimJob]
    never_fit: int
    sizing: Sizing
    layouts: dict[str, float] | None = None


def sim_jobs(workload: Workload, mode: str, cards: dict[str, int]) -> tuple[list[SimJob], int]:
    """The jobs as ``mode`` asks for them, and how many no instance of the mode can hold."""
    out, never = [], 0
    for job in workload.jobs:
        asked = modes.request_in(mode, job, cards)
        if asked is None:
            never += 1
            continue
        per_member = max(job.request.gpus, 1) * job.request.gang
        used = job.usage
        out.append(SimJob(job.job_id, job.submit_s, job.run_s, asked.request, asked.gpu_share,
                          used.compute_mean_pct / 100 * per_member if used else 0.0,
                          used.memory_mean_mib * per_member if used else 0.0))
    return out, never


def never_fitting(jobs: Sequence[SimJob], rows: Sequence[NodeRow], config: SchedulerConfig,
                  partitioned: bool) -> set[str]:
    """Jobs the scheduler calls unschedulable on one empty node of every kind (every layout)."""
    kinds = {(r.cpu_milli, r.memory_mib, r.gpus, r.model, r.gpu_memory_mib): r for r in rows}
    probe_rows = []
    for variant in ([{name: 1.0} for name in LAYOUTS] if partitioned else [None]):
        for i, r in enumerate(kinds.values()):
            name = f"kind{i}-{next(iter(variant)) if variant else 'plain'}"
            probe_rows.append((NodeRow(name, r.cpu_milli, r.memory_mib, r.gpus, r.model,
                                       r.gpu_memory_mib), variant))
    nodes = []
    for row, variant in probe_rows:
        nodes += ClusterTemplate([row]).build(1, variant).nodes
    def shape(r: Request) -> tuple:
        return (r.cpu_milli, r.memory_mib, r.gpus, r.gpu_milli, r.gpu_memory_mib, r.constraints,
                r.gang)

    first: dict[tuple, SimJob] = {}
    for j in jobs:
        first.setdefault(shape(j.request), j)
    pending = [PendingJob(j.job_id, QUEUE, j.request, submitted_seq=i)
               for i, j in enumerate(first.values())]
    decision = schedule(Snapshot(nodes, [], pending), config)
    bad = {key for key, j in first.items()
           if (reason := decision.pending.get(j.job_id)) and reason.unschedulable}
    return {j.job_id for j in jobs if shape(j.request) in bad}


def static_layouts(jobs: Sequence[SimJob]) -> dict[str, float]:
    """Layout shares from the jobs' instance-seconds per profile (``partitions``)."""
    seconds: Counter[int] = Counter()
    multi_gpu = 0.0
    for j in jobs:
        r = j.request
        if r.gpus > 1:
            multi_gpu += r.gpus * r.gang * j.run_s
            continue
        profile = min(int(n.rsplit("/", 1)[1][:-1]) for n in r.constraints.models)
        seconds[profile] += r.gang * j.run_s
    return layout_shares(dict(seconds), multi_gpu)


def run_mode(workload: Workload, mode: str, template: ClusterTemplate, config: SchedulerConfig,
             bound_s: float, progress: Progress | None = None) -> ModeRun:
    jobs, never = sim_jobs(workload, mode, template.cards)
    partitioned = mode == "static-partitions"
    bad = never_fitting(jobs, workload.nodes, config, partitioned)
    jobs = [j for j in jobs if j.job_id not in bad]
    layouts = static_layouts(jobs) if partitioned else None
    widest = max((j.request.gpus for j in jobs if j.request.gpus > 1), default=1)
    sizing = smallest(jobs, template, config, bound_s,
                      lambda k: template.build(k, layouts, widest), progress)
    return ModeRun(mode, jobs, never + len(bad), sizing, layouts)


def summary(run: ModeRun, template: ClusterTemplate) -> dict:
    """The figures of one mode (see docs/utilisation.md for each field)."""
    s = run.sizing
    seen = demand_at_arrivals(run.jobs)
    out: dict = {"jobs": len(run.jobs), "never_fit": run.never_fit,
                 "peak_demand_gpu": round(max(seen, default=0.0), 2),
                 "replays": [asdict(p) | {"p95_wait_s": _finite(p.p95_wait_s)} for p in s.probes]}
    if run.layouts:
        out["layouts"] = {k: round(v, 4) for k, v in run.layouts.items()}
    if s.result is None:
        out["gpus"] = None
        return out
    r, line = s.result, s.result.timeline
    out |= {
        "gpus": r.gpus, "nodes": s.nodes,
        "models": _models(template.rows(s.nodes)),
        "p50_wait_s": _finite(r.wait_percentile(50)),
        "p95_wait_s": _finite(r.wait_percentile(95)),
        "p99_wait_s": _finite(r.wait_percentile(99)),
        "mean_wait_s": round(sum(r.waits) / len(r.waits), 1) if r.waits else 0.0,
        "unplaced": r.unplaced,
        "allocated_gpu_fraction": round(line.mean("allocated_gpu") / r.gpus, 4),
        "allocated_memory_fraction": round(line.mean("allocated_memory_mib") / r.gpu_memory_mib, 4),
        "used_gpu_fraction": round(line.mean("used_gpu") / r.gpus, 4),
        "used_memory_fraction": round(line.mean("used_memory_mib") / r.gpu_memory_mib, 4),
        "peak_allocated_gpu": round(max(line.allocated_gpu, default=0.0), 2),
        "binds": ("memory" if line.mean("allocated_memory_mib") / r.gpu_memory_mib >
                  line.mean("allocated_gpu") / r.gpus + 1e-9 else "compute"),
        "seconds": round(sum(p.seconds for p in s.probes), 2),
        "cpu_seconds": round(sum(p.cpu_seconds for p in s.probes), 2),
    }
    return out


def _finite(seconds: float) -> float | None:
    """Seconds rounded for JSON; None for waiting forever (a job that never started)."""
    return None if math.isinf(seconds) else round(seconds, 1)


def _models(rows: Sequence[NodeRow]) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for r in rows:
        counts[r.model] += r.gpus
    return dict(counts.most_common())


def whatif(workload: Workload, mode_names: Sequence[str] = modes.MODES, policy: str = "gpupool",
           bound_s: float = DEFAULT_BOUND_S,
           progress: Callable[[str], Progress] | None = None) -> tuple[dict, list[ModeRun]]:
    """Size every mode for ``workload``; the JSON-ready report and the runs (for plots)."""
    config = SchedulerConfig(policy=policy, preemption=False)
    template = ClusterTemplate(workload.nodes)
    runs = [run_mode(workload, m, template, config, bound_s, progress(m) if progress else None)
            for m in mode_names]
    report = {
        "workload": {"name": workload.name, "jobs": len(workload.jobs), "excluded": workload.excluded,
                     "span_days": round(workload.span_s / 86400, 2), "notes": workload.notes},
        "cluster": {"template_gpus": sum(r.gpus for r in workload.nodes),
                    "template_nodes": len(workload.nodes), "models": _models(workload.nodes)},
        "policy": policy, "p95_wait_bound_s": bound_s,
        "right_sizing_margin": {"compute": DEFAULT_MARGIN.compute, "memory": DEFAULT_MARGIN.memory},
        "modes": {run.mode: summary(run, template) for run in runs},
    }
    report["ratios"] = ratios(report["modes"])
    return report, runs


def ratios(by_mode: dict[str, dict]) -> dict[str, float | None]:
    """GPUs needed exclusive / each other mode (above 1: the other mode needs fewer)."""
    base = by_mode.get("exclusive", {}).get("gpus")
    out = {}
    for mode, figures in by_mode.items():
        if mode != "exclusive" and base:
            out[f"exclusive/{mode}"] = (round(base / figures["gpus"], 3)
                                        if figures.get("gpus") else None)
    return out
