"""The smallest cluster (first k nodes of the mix) whose 95th-percentile queue wait is in bound.

Replays of too-small clusters stop early (``replay``) but one that serves runs to the end, and
proving k the smallest takes replays of k and k-1 at least: so the search starts close. Its
guess is the cluster holding the 90th percentile of the demand each job would find running
at its arrival if nobody waited; from there it walks down 1, 2, 4... nodes while the cluster
serves, or climbs an eighth at a time until it does, then bisects the last step. A larger
cluster usually serves if a smaller one does; the search assumes it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from controlplane.scheduler import SchedulerConfig
from controlplane.whatif.cluster import Cluster, ClusterTemplate
from controlplane.whatif.replay import Replay, SimJob, replay
from controlplane.whatif.rightsize import percentile

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


def demand_at_arrivals(jobs: Sequence[SimJob]) -> list[float]:
    """The GPU demand running at each job's arrival (itself included) if no job ever waited."""
    events = sorted([(j.submit_s, 1, j.demand_gpu) for j in jobs] +
                    [(j.submit_s + j.run_s, 0, -j.demand_gpu) for j in jobs])
    level, seen = 0.0, []
    for _, arrival, delta in events:
        level += delta
        if arrival:
            seen.append(level)
    return seen


def smallest(jobs: Sequence[SimJob], template: ClusterTemplate, config: SchedulerConfig,
             bound_s: float, build: Callable[[int], Cluster] | None = None,
             progress: Progress | None = None, max_nodes: int | None = None) -> Sizing:
    """Search the smallest k (see module doc); ``build(k)``: the cluster of k nodes (default:
    ``template.build``, unpartitioned)."""
    build = build or template.build
    max_nodes = max_nodes or 4 * len(template.order)
    sizing = Sizing(None, None)
    tried: dict[int, Replay] = {}

    def serves(k: int) -> bool:
        if k not in tried:
            cluster = build(k)
            label = f"{k} nodes, {cluster.gpus} GPUs"
            tick = (lambda done, total: progress(label, done, total)) if progress else None
            run = replay(jobs, cluster, config, bound_s, tick)
            tried[k] = run
            sizing.probes.append(Probe(k, cluster.gpus, run.serves(bound_s), run.finished,
                                       run.wait_percentile(95), round(run.seconds, 3),
                                       round(run.cpu_seconds, 3), run.schedule_calls))
        return tried[k].serves(bound_s)

    seen = demand_at_arrivals(jobs)
    guess = min(template.nodes_for_gpus(percentile(seen, 90) if seen else 0), max_nodes)
    if serves(guess):  # walk down 1, 2, 4... nodes until one does not serve
        low, high, step = 0, guess, 1
        while high - step > 0:
            if not serves(high - step):
                low = high - step
                break
            high, step = high - step, 2 * step
    else:  # climb an eighth (at least a node) at a time until one serves
        low, high = guess, guess
        while not serves(high):
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
