"""Event-driven replay of jobs through the real scheduler, in simulated time.

Time jumps from event to event (arrivals, departures); at each event time the departures
free their slices, the arrivals join the queue, and — only when jobs are waiting and
something changed — ``controlplane.scheduler.schedule(snapshot, config)`` decides, exactly
as the server's loop would. Placements start at once and depart after their run time. The
cluster's Nodes are kept up to date incrementally (no rebuild per event).

With a wait bound, a replay stops as soon as more than 5% of the jobs have waited (or are
waiting) longer than it: its 95th-percentile wait can no longer be within the bound.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from controlplane.core.resources import WHOLE, Node, Request
from controlplane.core.snapshot import PendingJob, Queue, RunningJob, Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.whatif.cluster import Cluster

QUEUE = "whatif"


@dataclass(frozen=True, slots=True)
class SimJob:
    """A job as one mode asks for it, with what it uses while it runs (GPUs, MiB)."""

    job_id: str
    submit_s: float
    run_s: float
    request: Request
    demand_gpu: float  # GPUs' worth it asks for (the search's first guess sums these)
    used_gpu: float = 0.0
    used_memory_mib: float = 0.0


@dataclass(slots=True)
class Timeline:
    """Values after each event time (a step function): allocation, use and the queue."""

    t: list[float] = field(default_factory=list)
    allocated_gpu: list[float] = field(default_factory=list)
    allocated_memory_mib: list[float] = field(default_factory=list)
    used_gpu: list[float] = field(default_factory=list)
    used_memory_mib: list[float] = field(default_factory=list)
    queued_jobs: list[int] = field(default_factory=list)

    def mean(self, series: str) -> float:
        """Time-weighted mean of ``series`` from the first to the last event."""
        values, t = getattr(self, series), self.t
        span = t[-1] - t[0] if len(t) > 1 else 0.0
        if span <= 0:
            return float(values[-1]) if values else 0.0
        return sum(v * (t2 - t1) for v, t1, t2 in zip(values, t, t[1:])) / span


@dataclass(slots=True)
class Replay:
    """What one replay of one mode on one cluster gave."""

    jobs: int
    gpus: int
    gpu_memory_mib: int
    waits: list[float] = field(default_factory=list)  # placed jobs, seconds
    unplaced: int = 0  # never started on this cluster (count as waiting forever)
    finished: bool = True  # False: stopped early, the wait bound was already broken
    schedule_calls: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    timeline: Timeline = field(default_factory=Timeline)

    def wait_percentile(self, q: float) -> float:
        """Nearest-rank percentile over every job; unplaced jobs wait forever."""
        if not self.jobs:
            return 0.0
        rank = max(1, math.ceil(q / 100 * self.jobs))
        if rank > len(self.waits):
            return math.inf
        return sorted(self.waits)[rank - 1]

    def serves(self, bound_s: float) -> bool:
        return self.finished and self.wait_percentile(95) <= bound_s


def could_place(requests: Iterable[Request], nodes: Sequence[Node]) -> bool:
    """False only when no node has the room any of ``requests`` needs for one member (free
    CPU, memory and enough idle GPUs, or one GPU with the compute): then a scheduling cycle
    cannot place anything and is skipped. A necessary condition, never a placement."""
    for node in nodes:
        idle = sum(1 for a in node.accelerators if a.is_idle)
        most = max((a.free_milli for a in node.accelerators), default=0)
        for r in requests:
            if (node.free_cpu_milli >= r.cpu_milli and node.free_memory_mib >= r.memory_mib
                    and (idle >= r.gpus if r.gpus else most >= r.gpu_milli)):
                return True
    return False


def allowance(jobs: int) -> int:
    """How many jobs may wait beyond the bound with the 95th percentile still within it."""
    return jobs - math.ceil(0.95 * jobs)


def replay(jobs: Sequence[SimJob], cluster: Cluster, config: SchedulerConfig,
           bound_s: float | None = None,
           progress: Callable[[int, int], None] | None = None) -> Replay:
    """Replay ``jobs`` (sorted by submit time) on ``cluster`` (its Nodes are modified)."""
    started, cpu_started = time.perf_counter(), time.process_time()
    result = Replay(len(jobs), cluster.gpus, cluster.gpu_memory_mib)
    accs, share = cluster.by_uuid(), cluster.share
    nodes = {n.name: n for n in cluster.nodes}
    by_id = {j.job_id: j for j in jobs}
    queues = [Queue(QUEUE, team=QUEUE)]
    pending: dict[str, PendingJob] = {}
    running: dict[str, RunningJob] = {}
    ends: list[tuple[float, str]] = []
    line = result.timeline
    alloc_gpu = alloc_mem = used_gpu = used_mem = 0.0
    late = 0  # placed jobs that waited longer than the bound
    limit = allowance(len(jobs))
    i, events, tick = 0, 0, 0

    def hold(members, sign: int) -> tuple[float, float]:
        g = m = 0.0
        for member in members:
            node = nodes[member.node]
            node.allocated_cpu_milli += sign * member.cpu_milli
            node.allocated_memory_mib += sign * member.memory_mib
            for s in member.slices:
                acc = accs[s.accelerator_uuid]
                acc.allocated_milli += sign * s.compute_milli
                acc.allocated_memory_mib += sign * s.memory_mib
                g += s.compute_milli / WHOLE * share.get(s.accelerator_uuid, 1.0)
                m += s.memory_mib
        return g, m

    while i < len(jobs) or ends:
        now = min(jobs[i].submit_s if i < len(jobs) else math.inf, ends[0][0] if ends else math.inf)
        changed = False
        while ends and ends[0][0] <= now:
            _, job_id = heapq.heappop(ends)
            g, m = hold(running.pop(job_id).members, -1)
            job = by_id[job_id]
            alloc_gpu, alloc_mem = alloc_gpu - g, alloc_mem - m
            used_gpu, used_mem = used_gpu - job.used_gpu, used_mem - job.used_memory_mib
            events += 1
            changed = True
        while i < len(jobs) and jobs[i].submit_s <= now:
            job = jobs[i]
            pending[job.job_id] = PendingJob(job.job_id, QUEUE, job.request, submitted_seq=i)
            i += 1
            events += 1
            changed = True
        if pending and changed and could_place({p.request for p in pending.values()},
                                                cluster.nodes):
            decision = schedule(Snapshot(cluster.nodes, queues, list(pending.values()),
                                         list(running.values()), now=now), config)
            result.schedule_calls += 1
            for placement in decision.placements:
                job = by_id[placement.job_id]
                del pending[job.job_id]
                running[job.job_id] = RunningJob(job.job_id, QUEUE, job.request,
                                                 placement.members, started_at=now)
                g, m = hold(placement.members, +1)
                alloc_gpu, alloc_mem = alloc_gpu + g, alloc_mem + m
                used_gpu, used_mem = used_gpu + job.used_gpu, used_mem + job.used_memory_mib
                heapq.heappush(ends, (now + job.run_s, job.job_id))
                wait = now - job.submit_s
                result.waits.append(wait)
                late += bound_s is not None and wait > bound_s
            for job_id, reason in decision.pending.items():
                if reason.unschedulable and job_id in pending:  # never fits this cluster
                    del pending[job_id]
                    result.unplaced += 1
        line.t.append(now)
        line.allocated_gpu.append(alloc_gpu)
        line.allocated_memory_mib.append(alloc_mem)
        line.used_gpu.append(used_gpu)
        line.used_memory_mib.append(used_mem)
        line.queued_jobs.append(len(pending))
        if bound_s is not None:
            over = late + result.unplaced
            for job_id in pending:  # oldest first
                if now - by_id[job_id].submit_s <= bound_s or over > limit:
                    break
                over += 1
            if over > limit:
                result.finished = False
                break
        if progress and events >= tick:
            progress(events, 2 * len(jobs))
            tick = events + 512
    result.unplaced += len(pending)
    result.seconds = time.perf_counter() - started
    result.cpu_seconds = time.process_time() - cpu_started
    return result
