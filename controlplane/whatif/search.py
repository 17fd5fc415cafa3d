"""The smallest cluster (first k nodes of the mix) whose 95th-percentile queue wait is in bound.

Replays of too-small clusters stop early (``replay``) while one that serves must run to the
end, so the search climbs from below: from the cluster that holds the mean demand (nothing
smaller can keep up), in steps of an eighth (at least one node) until one serves, then bisects
the last step. A larger cluster usually serves if a smaller one does; the search assumes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controlplane.scheduler import SchedulerConfig
from controlplane.whatif.cluster import ClusterTemplate
from controlplane.whatif.replay import Replay, SimJob, replay

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True, slots=True)
class Probe:
    """One replay of the search: cluster size and whether it served the workload."""

    nodes: int
    gpus: int
    serves: bool
    finished: bool
    p95_wait_s: float
    seconds: float
    cpu_seconds: float
    schedule_calls: int


@dataclass(slots=True)
class Sizing:
    nodes: int | None  # None: nothing up to the largest size tried serves
    result: Replay | None
    probes: list[Probe] = field(default_factory=list)


def demand_profile(jobs: Sequence[SimJob]) -> tuple[float, float]:
    """(peak, time-mean) GPU demand if every job started the moment it arrived."""
    if not jobs:
        return 0.0, 0.0
    events = sorted([(j.submit_s, j.demand_gpu) for j in jobs] +
                    [(j.submit_s + j.run_s, -j.demand_gpu) for j in jobs])
    level = peak = area = 0.0
    last = events[0][0]
    for t, delta in events:
        area += level * (t - last)
        level, last = level + delta, t
        peak = max(peak, level)
    span = events[-1][0] - events[0][0]
    return peak, (area / span if span > 0 else peak)


def smallest(jobs: Sequence[SimJob], template: ClusterTemplate, config: SchedulerConfig,
             bound_s: float, layouts: dict[str, float] | None = None,
             progress: Progress | None = None, max_nodes: int | None = None) -> Sizing:
    """Search the smallest k (see module doc); ``layouts``: static partitions of the GPUs."""
    max_nodes = max_nodes or 4 * len(template.order)
    sizing = Sizing(None, None)
    tried: dict[int, Replay] = {}

    def serves(k: int) -> bool:
        if k not in tried:
            cluster = template.build(k, layouts)
            label = f"{k} nodes, {cluster.gpus} GPUs"
            tick = (lambda done, total: progress(label, done, total)) if progress else None
            run = replay(jobs, cluster, config, bound_s, tick)
            tried[k] = run
            sizing.probes.append(Probe(k, cluster.gpus, run.serves(bound_s), run.finished,
                                       run.wait_percentile(95), round(run.seconds, 3),
                                       round(run.cpu_seconds, 3), run.schedule_calls))
        return tried[k].serves(bound_s)

    _, mean = demand_profile(jobs)
    low, high = 0, min(template.nodes_for_gpus(mean), max_nodes)
    while not serves(high):  # too small replays stop early: climb from below
        if high >= max_nodes:
            return sizing
        low, high = high, min(max_nodes, high + max(1, high // 8))
    while high - low > 1:
        mid = (low + high) // 2
        if serves(mid):
            high = mid
        else:
            low = mid
    sizing.nodes, sizing.result = high, tried[high]
    return sizing
