"""Trace replay as in the FGD paper: inflate to 1.3x capacity, shuffle, place one by one.

Nothing departs; a pod that fits nowhere is recorded as failed and skipped. After every pod
the allocation and fragmentation are logged and binned by arrived demand (% of capacity).
Seeded numpy randomness only, so one seed always gives the same figures.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from controlplane.core.resources import Constraints
from controlplane.scheduler import policies
from controlplane.scheduler.frag import TaskShape, Workload
from controlplane.scheduler.framework import Context, MemberShape, Plan
from controlplane.scheduler.place import assume_member
from controlplane.scheduler.plugins.fit import candidates
from controlplane.scheduler.state import ClusterState
from controlplane.scheduler.tracefile import TraceNode, TracePod

REPORT_BINS = (90, 95, 100, 110, 120, 130)
# fragmentation is measured only around the reported bins (an empty bin borrows a neighbour's)
FRAG_BINS = frozenset(b + d for b in REPORT_BINS for d in (-1, 0, 1))


@dataclass(slots=True)
class RunResult:
    seed: int
    placed: int
    failed: int
    seconds: float
    cpu_seconds: float = 0.0
    alloc_pct: dict[int, float] = field(default_factory=dict)  # arrived % -> allocated %
    frag_pct: dict[int, float] = field(default_factory=dict)  # reported arrived % -> frag % of capacity

    def unallocated(self, arrived: int) -> float:
        return 100.0 - self.alloc_pct[arrived]


def build_state(nodes: Sequence[TraceNode]) -> ClusterState:
    return ClusterState.from_table([n.name for n in nodes], [n.cpu_milli for n in nodes],
                                   [n.memory_mib for n in nodes], [n.gpus for n in nodes],
                                   [n.model for n in nodes])


def workload_of(pods: Sequence[TracePod]) -> Workload:
    """The typical shapes of the trace (paper: most popular until 95% of pods).

    Each shape also carries the median host memory of its pods; the paper's FGD ignores it,
    the default policy uses it to see GPUs stranded by a node's memory running out.
    """
    memory: dict[TaskShape, list[int]] = {}
    for p in pods:
        memory.setdefault(TaskShape(p.cpu_milli, p.num_gpu, p.gpu_milli, p.gpu_spec),
                          []).append(p.memory_mib)

    def with_memory(s: TaskShape) -> TaskShape:
        values = sorted(memory[s])
        return TaskShape(s.cpu_milli, s.num_gpu, s.gpu_milli, s.models, values[len(values) // 2])

    typical = Workload.typical(TaskShape(p.cpu_milli, p.num_gpu, p.gpu_milli, p.gpu_spec)
                               for p in pods)
    demand = {with_memory(s): len(v) for s, v in memory.items()}
    return Workload([with_memory(s) for s in typical.shapes], typical.weights, demand)


def arrival_order(pods: Sequence[TracePod], capacity_milli: int, seed: int,
                  tune: float = 1.3) -> list[TracePod]:
    """Sorted by name, shuffled, then copies appended (or pods dropped) to reach tune x capacity."""
    rng = np.random.default_rng(seed)
    ordered = sorted(pods, key=lambda p: p.name)
    order = [ordered[i] for i in rng.permutation(len(ordered))]
    target = tune * capacity_milli
    total = sum(p.gpu_demand for p in order)
    if total < target:
        tune_rng = np.random.default_rng(seed + 1_000_003)
        while total < target:
            pod = ordered[int(tune_rng.integers(len(ordered)))]
            order.append(pod)
            total += pod.gpu_demand
    elif total > target:
        drop_rng = np.random.default_rng(seed + 2_000_003)
        keep = np.ones(len(order), bool)
        for i in drop_rng.permutation(len(order)):
            if total <= target:
                break
            if order[i].gpu_demand:
                keep[i] = False
                total -= order[i].gpu_demand
        order = [p for p, k in zip(order, keep) if k]
    return order


def _shape(pod: TracePod) -> MemberShape:
    constraints = Constraints(models=pod.gpu_spec)
    if pod.num_gpu and pod.gpu_milli >= 1000:
        return MemberShape(pod.cpu_milli, pod.memory_mib, whole=pod.num_gpu,
                           constraints=constraints)
    return MemberShape(pod.cpu_milli, pod.memory_mib, milli=pod.gpu_milli if pod.num_gpu else 0,
                       constraints=constraints)


def run(nodes: Sequence[TraceNode], pods: Sequence[TracePod], policy: str, seed: int,
        progress: Callable[[int, int], None] | None = None, limit: int | None = None) -> RunResult:
    """One replay of ``pods`` on an empty cluster of ``nodes`` with ``policy``."""
    state = build_state(nodes)
    state.rank = np.random.default_rng(seed + 3_000_017).permutation(state.n)
    ctx = Context(state, workload_of(pods))
    measure = ctx.fragmentation  # the paper's fragmentation, shared with the fgd scorer
    prof = policies.profile(policy)
    prof.prepare(ctx)
    plan = Plan(ctx)
    capacity = int(state.gpu_count.sum()) * 1000
    order = arrival_order(pods, capacity, seed)[:limit]
    shapes: dict[tuple, MemberShape] = {}
    never_again: set[MemberShape] = set()  # nothing departs: a shape that failed fails forever
    sums: dict[int, list[float]] = {}
    arrived = used = placed = failed = 0
    started, cpu_started = time.perf_counter(), time.process_time()
    for i, pod in enumerate(order):
        key = (pod.cpu_milli, pod.memory_mib, pod.num_gpu, pod.gpu_milli, pod.gpu_spec)
        shape = shapes.get(key) or shapes.setdefault(key, _shape(pod))
        cands = None if shape in never_again else candidates(ctx, shape)
        arrived += pod.gpu_demand
        if cands is not None and len(cands):
            assume_member(plan, prof, shape, 0, cands)
            plan.commit()
            used += pod.gpu_demand
            placed += 1
        else:
            failed += 1
            never_again.add(shape)
        bin_ = math.floor(arrived / (10 * capacity / 1000) + 0.5)
        acc = sums.setdefault(bin_, [0.0, 0.0, 0])
        acc[0] += round(100.0 * used / capacity, 2)
        if bin_ in FRAG_BINS:
            acc[1] += 100.0 * measure.cluster_frag() / capacity
        acc[2] += 1
        if progress and i % 256 == 0:
            progress(i, len(order))
    seconds = time.perf_counter() - started
    cpu_seconds = time.process_time() - cpu_started
    if progress:
        progress(len(order), len(order))
    result = RunResult(seed, placed, failed, seconds, cpu_seconds)
    for b in range(0, max(sums) + 1):
        src = sums.get(b) or sums.get(b - 1) or sums.get(b + 1)
        if src:
            result.alloc_pct[b] = src[0] / src[2]
            if b in REPORT_BINS:
                result.frag_pct[b] = src[1] / src[2]
    return result


def summarize(results: Sequence[RunResult], policy: str, trace: str) -> dict:
    """Means over seeds, in the benchmark's one-line JSON shape."""
    def mean(values):
        values = list(values)
        return round(sum(values) / len(values), 3) if values else None

    unalloc = {str(b): mean(r.unallocated(b) for r in results if b in r.alloc_pct)
               for b in REPORT_BINS}
    pods = sum(r.placed + r.failed for r in results)
    return {
        "policy": policy, "trace": trace, "seeds": [r.seed for r in results],
        "unallocated_gpu_pct": unalloc,
        "frag_pct_of_capacity": {"100": mean(r.frag_pct[100] for r in results
                                             if 100 in r.frag_pct)},
        "placements_per_s": round(pods / max(sum(r.seconds for r in results), 1e-9), 1),
        # the same per second of this process's CPU time: honest when other work shares cores
        "placements_per_cpu_s": round(pods / max(sum(r.cpu_seconds for r in results), 1e-9), 1),
    }
