"""Control-plane Prometheus metrics: one private CollectorRegistry per app, DB gauges read at scrape.

Counters and histograms (API latency by route template, scheduling cycles and placements) are
fed by the process that does the work. Gauges about the pool (capacity, allocation and quota use
per queue, pending jobs by queue and reason, node heartbeats, scheduler leader) and the job
transition counter are computed from the database at scrape time with a handful of grouped
queries, cached for ``cache_s`` so concurrent scrapes cost one read. Nothing touches
prometheus_client's global registry, so tests may start many apps in one process.

Wiring: the app factory (``controlplane.api.app.build_app``) adds the latency middleware, serves
GET /metrics, and hands ``observe_cycle`` to the scheduling loop as its observer.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from controlplane.core.states import UNFINISHED_STATES


LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
CYCLE_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class ControlPlaneMetrics:
    """The metrics of one control-plane app (its own registry)."""

    def __init__(self, db=None, *, cache_s: float = 1.0) -> None:  # noqa: ANN001
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.request_seconds = Histogram(
            "gpupool_api_request_duration_seconds", "API request latency by route template.",
            ["method", "route", "code"], buckets=LATENCY_BUCKETS, registry=r)
        self.cycle_seconds = Histogram(
            "gpupool_scheduler_cycle_duration_seconds", "Duration of one scheduling cycle "
            "(snapshot, schedule, apply).", buckets=CYCLE_BUCKETS, registry=r)
        self.cycles = Counter("gpupool_scheduler_cycles", "Scheduling cycles run by this replica.",
                              registry=r)
        self.placements = Counter("gpupool_scheduler_placements",
                                  "Jobs placed by the scheduler.", registry=r)
        self.preemptions = Counter("gpupool_scheduler_preemptions",
                                   "Jobs preempted by the scheduler.", registry=r)
        self.pending_after_cycle = Histogram(
            "gpupool_scheduler_pending_jobs_per_cycle", "Jobs left pending at the end of a cycle.",
            buckets=(0, 1, 10, 100, 1000, 10000, 100000), registry=r)
        self.db_collector: PoolCollector | None = None
        if db is not None:
            self.db_collector = PoolCollector(db, cache_s=cache_s)
            r.register(self.db_collector)

    def observe_request(self, method: str, route: str, code: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(code)).observe(seconds)

    def observe_cycle(self, seconds: float, placements: int = 0, preemptions: int = 0,
                      pending: int | None = None) -> None:
        """Record one scheduling cycle (call it from the scheduling loop)."""
        self.cycles.inc()
        self.cycle_seconds.observe(seconds)
        if placements:
            self.placements.inc(placements)
        if preemptions:
            self.preemptions.inc(preemptions)
        if pending is not None:
            self.pending_after_cycle.observe(pending)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class PoolCollector(Collector):
    """Pool gauges computed from the database at scrape time (cached briefly)."""

    def __init__(self, db, *, cache_s: float = 1.0, clock: Callable[[], float] = time.time) -> None:  # noqa: ANN001
        self._db = db
        self._cache_s = cache_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: tuple[float, list] | None = None
        self._last_event_id = 0
        self._transitions: dict[str, float] = {}

    def describe(self) -> list:
        return []  # dynamic families; skip the describe-time DB read

    def collect(self) -> Iterator:
        with self._lock:
            if self._cached and time.monotonic() - self._cached[0] < self._cache_s:
                families = self._cached[1]
            else:
                families = self._read()
                self._cached = (time.monotonic(), families)
        yield from families

    def _read(self) -> list:
        from controlplane.metrics_queries import read_pool  # late: keeps sqlalchemy out of import time

        try:
            pool = read_pool(self._db, self._clock(), self._last_event_id)
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the DB blips
            up = GaugeMetricFamily("gpupool_database_up", "1 if the last scrape read the database.")
            up.add_metric([], 0.0)
            err = GaugeMetricFamily("gpupool_database_scrape_error", "Last scrape error.",
                                    labels=["error"])
            err.add_metric([type(exc).__name__], 1.0)
            return [up, err]
        for kind, n in pool.pop("transitions").items():
            self._transitions[kind] = self._transitions.get(kind, 0.0) + n
        self._last_event_id = pool.pop("last_event_id")
        return list(_families(pool, self._transitions))


# what serving jobs report in their progress (workloads/inference) -> exported gauge
SERVING = [("ttft_ms", "gpupool_serving_ttft_ms", "Time to first token (ms), recent mean."),
           ("e2e_latency_ms", "gpupool_serving_e2e_latency_ms", "End-to-end request latency (ms), recent mean."),
           ("tokens_per_s", "gpupool_serving_output_tokens_per_second", "Output tokens per second."),
           ("ms_per_output_token", "gpupool_serving_ms_per_output_token", "Milliseconds per output token."),
           ("kv_cache_usage", "gpupool_serving_kv_cache_usage_ratio", "KV-cache blocks in use (0..1)."),
           ("requests_running", "gpupool_serving_requests_running", "Requests being served."),
           ("requests_waiting", "gpupool_serving_requests_waiting", "Requests queued at the server.")]


def _serving_families(jobs: list[tuple[str, str, str, str, dict]]) -> Iterator:
    for key, name, help_text in SERVING:
        fam = GaugeMetricFamily(name, help_text, labels=["job", "job_name", "team", "queue"])
        for job_id, job_name, team, queue, progress in jobs:
            value = progress.get(key)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                fam.add_metric([job_id, job_name, team, queue], float(value))
        yield fam


def _families(pool: dict, transitions: dict[str, float]) -> Iterator:
    up = GaugeMetricFamily("gpupool_database_up", "1 if the last scrape read the database.")
    up.add_metric([], 1.0)
    yield up
    yield from _serving_families(pool["serving"])
    by_model = [("gpupool_accelerators", "Accelerators registered, by vendor and model.", "count"),
                ("gpupool_capacity_milli", "Compute capacity in milli (1000 = one GPU).", "milli"),
                ("gpupool_allocated_milli", "Compute allocated to slices in milli.", "allocated_milli"),
                ("gpupool_capacity_memory_mib", "Accelerator memory in MiB.", "memory_mib"),
                ("gpupool_allocated_memory_mib", "Accelerator memory allocated to slices in MiB.",
                 "allocated_memory_mib"),
                ("gpupool_accelerators_unhealthy", "Unhealthy accelerators.", "unhealthy"),
                ("gpupool_gpu_utilization_ratio", "Mean reported GPU utilisation (0..1).", "util")]
    for name, help_text, key in by_model:
        fam = GaugeMetricFamily(name, help_text, labels=["vendor", "model"])
        for m in pool["models"]:
            fam.add_metric([m["vendor"], m["model"]], float(m[key]))
        yield fam
    nodes = GaugeMetricFamily("gpupool_nodes", "Nodes by state.", labels=["state"])
    for state, n in sorted(pool["node_states"].items()):
        nodes.add_metric([state], float(n))
    yield nodes
    cordoned = GaugeMetricFamily("gpupool_nodes_cordoned", "Cordoned nodes.")
    cordoned.add_metric([], float(pool["cordoned"]))
    yield cordoned
    age = GaugeMetricFamily("gpupool_node_heartbeat_age_seconds",
                            "Seconds since each node's last heartbeat.", labels=["node"])
    for name, seconds in pool["heartbeats"]:
        age.add_metric([name], float(seconds))
    yield age
    jobs = GaugeMetricFamily("gpupool_jobs", "Jobs not yet final, by state.", labels=["state"])
    for state in sorted(UNFINISHED_STATES):
        jobs.add_metric([state.value], float(pool["job_states"].get(state.value, 0)))
    yield jobs
    pending = GaugeMetricFamily("gpupool_pending_jobs", "Pending jobs by queue and reason code.",
                                labels=["team", "queue", "reason"])
    for (team, queue, reason), n in sorted(pool["pending"].items()):
        pending.add_metric([team, queue, reason], float(n))
    yield pending
    qfams = [("gpupool_queue_allocated_milli", "Compute allocated to the queue's jobs (milli).",
              "allocated_milli"),
             ("gpupool_queue_guarantee_milli", "The queue's guaranteed quota (milli).",
              "guarantee_milli"),
             ("gpupool_queue_limit_milli", "The queue's hard limit (milli); absent when unlimited.",
              "limit_milli"),
             ("gpupool_queue_quota_used_ratio", "Allocated over guarantee (above 1: borrowing).",
              "used_ratio"),
             ("gpupool_queue_borrowed_milli", "Allocation above the guarantee (milli).", "borrowed"),
             ("gpupool_queue_running_jobs", "Jobs scheduled or running in the queue.", "running"),
             ("gpupool_queue_oldest_pending_age_seconds",
              "Age of the queue's oldest pending job (0 when none).", "oldest_pending_s")]
    for name, help_text, key in qfams:
        fam = GaugeMetricFamily(name, help_text, labels=["team", "queue"])
        for q in pool["queues"]:
            if q[key] is not None:
                fam.add_metric([q["team"], q["name"]], float(q[key]))
        yield fam
    leader = GaugeMetricFamily("gpupool_scheduler_leader_present",
                               "1 while some replica holds an unexpired scheduler lease.")
    leader.add_metric([], 1.0 if pool["leader"] else 0.0)
    yield leader
    trans = CounterMetricFamily("gpupool_job_transitions", "Job state transitions recorded "
                                "(from the audit log), by the state entered.", labels=["to"])
    for to, n in sorted(transitions.items()):
        trans.add_metric([to], n)
    yield trans


__all__ = ["ControlPlaneMetrics", "PoolCollector", "CONTENT_TYPE_LATEST"]
