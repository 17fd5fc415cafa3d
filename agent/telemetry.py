"""Telemetry sampler: device samples plus per-process and per-slice usage, every interval.

The agent's main loop (B2) gives it the backend and a callable listing the jobs it runs
(``ManagedJob``: ids, root pids, slices, and team, queue and user from the start order's
identity). Each ``sample()`` returns a ``TelemetrySnapshot`` holding wire ``AcceleratorSample``s
(with ``unmanaged_memory_mib`` = memory of GPU processes gpupool did not start, or that a job
holds outside its slice), per-process ``ProcessUsage``, one ``SliceReport`` per (attempt,
accelerator), whose ``slice_usage()`` is what a Heartbeat carries, and ``escapes``: a job's memory
on an accelerator outside its slice (a violation the runtime stops). A job's child processes (DeepSpeed workers, vLLM engines) count for
the job: pids NVML reports that are no job's root are matched to their ancestors through /proc.
Where NVML cannot see a job's processes (MPS clients), the job's own report (``reported``) is
its figure. ``latest`` feeds the exporter.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from agent.devices.base import DeviceBackend, ProcessUsage
from controlplane.core.wire import AcceleratorInfo, AcceleratorSample, SliceSpec, SliceUsage


@dataclass(frozen=True, slots=True)
class ManagedJob:
    """A job attempt the agent runs on this node, as telemetry needs to know it."""

    job_id: str
    attempt_id: str
    pids: frozenset[int]
    slices: tuple[SliceSpec, ...]
    queue: str = ""
    team: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class SliceReport:
    """Allocated vs used on one accelerator by one job attempt."""

    job_id: str
    attempt_id: str
    queue: str
    team: str
    accelerator_uuid: str
    compute_milli: int
    memory_mib: int
    memory_used_mib: float
    sm_util_pct: float | None  # share of the whole accelerator, 0..100
    user: str = ""

    def usage(self) -> SliceUsage:
        return SliceUsage(job_id=self.job_id, attempt_id=self.attempt_id,
                          accelerator_uuid=self.accelerator_uuid,
                          memory_used_mib=self.memory_used_mib, sm_util_pct=self.sm_util_pct)


@dataclass(frozen=True, slots=True)
class Escape:
    """Memory a job's processes hold on an accelerator outside its slices: a violation."""

    job_id: str
    attempt_id: str
    accelerator_uuid: str
    memory_mib: float


@dataclass(slots=True)
class TelemetrySnapshot:
    ts: float
    accelerators: list[AcceleratorInfo]
    samples: list[AcceleratorSample]
    processes: list[ProcessUsage]
    slices: list[SliceReport] = field(default_factory=list)
    escapes: list[Escape] = field(default_factory=list)

    def slice_usage(self) -> list[SliceUsage]:
        return [s.usage() for s in self.slices]


def parent_pids(proc: str = "/proc") -> dict[int, int]:
    """pid -> parent pid of every process on this machine (one pass over /proc)."""
    parents: dict[int, int] = {}
    for entry in os.scandir(proc):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"{proc}/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            parents[int(entry.name)] = int(fields[1])
        except (OSError, IndexError, ValueError):
            continue
    return parents


class TelemetrySampler:
    """Samples ``backend`` and attributes per-process usage to the jobs ``jobs()`` lists."""

    def __init__(
        self,
        backend: DeviceBackend,
        jobs: Callable[[], Iterable[ManagedJob]] = tuple,
        *,
        clock: Callable[[], float] = time.time,
        ancestry: Callable[[], dict[int, int]] = parent_pids,
        reported: Callable[[], dict[tuple[str, str], float]] = dict,
    ) -> None:
        self.backend = backend
        self._jobs = jobs
        self._reported = reported
        self._clock = clock
        self._ancestry = ancestry
        self.accelerators = backend.discover()
        self.latest: TelemetrySnapshot | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.errors = 0
        self.last_error: str | None = None

    def sample(self) -> TelemetrySnapshot:
        jobs = list(self._jobs())
        samples = self.backend.sample()
        processes = self.backend.processes()
        owner = self._owners(jobs, processes)
        allowed = {(j.attempt_id, s.accelerator_uuid) for j in jobs for s in j.slices}
        job_of = {j.attempt_id: j.job_id for j in jobs}
        used: dict[tuple[str, str], float] = {}
        sm: dict[tuple[str, str], float] = {}
        unmanaged: dict[str, float] = {}
        for p in processes:
            attempt = owner.get(p.pid)
            key = (attempt or "", p.accelerator_uuid)
            if attempt is None or key not in allowed:
                # no job's, or a job's on a GPU outside its slice: the scheduler must count it taken
                unmanaged[p.accelerator_uuid] = unmanaged.get(p.accelerator_uuid, 0.0) + p.memory_used_mib
            used[key] = used.get(key, 0.0) + p.memory_used_mib
            if p.sm_util_pct is not None:
                sm[key] = sm.get(key, 0.0) + p.sm_util_pct
        for s in samples:
            s.unmanaged_memory_mib = round(unmanaged.get(s.uuid, 0.0), 1)
        escapes = [Escape(job_of[a], a, uuid, round(mib, 1)) for (a, uuid), mib in used.items()
                   if a in job_of and (a, uuid) not in allowed and mib > 0]
        reported = self._reported()
        reports = []
        for job in jobs:
            for sl in job.slices:
                key = (job.attempt_id, sl.accelerator_uuid)
                util = sm.get(key)
                # NVML's per-process figure, or the job's own report where NVML cannot see it (MPS)
                mem = max(used.get(key, 0.0), reported.get(key, 0.0))
                reports.append(SliceReport(
                    job_id=job.job_id, attempt_id=job.attempt_id, queue=job.queue, team=job.team,
                    user=job.user,
                    accelerator_uuid=sl.accelerator_uuid, compute_milli=sl.compute_milli,
                    memory_mib=sl.memory_mib, memory_used_mib=round(mem, 1),
                    sm_util_pct=None if util is None else min(100.0, max(0.0, util)),
                ))
        snap = TelemetrySnapshot(self._clock(), self.accelerators, samples, processes, reports, escapes)
        self.latest = snap
        return snap

    def _owners(self, jobs: list[ManagedJob], processes: list[ProcessUsage]) -> dict[int, str]:
        """pid -> attempt id for every GPU process that is a job's root or descends from one."""
        roots = {pid: job.attempt_id for job in jobs for pid in job.pids}
        owner = {p.pid: roots[p.pid] for p in processes if p.pid in roots}
        strangers = {p.pid for p in processes if p.pid not in roots}
        if not strangers or not roots:
            return owner
        parents = self._ancestry()
        for pid in strangers:
            seen, cur = 0, pid
            while cur in parents and seen < 64:
                cur = parents[cur]
                seen += 1
                if cur in roots:
                    owner[pid] = roots[cur]
                    break
        return owner

    # ---- background loop -----------------------------------------------------------------
    def start(self, interval_s: float = 1.0) -> None:
        """Sample every ``interval_s`` in a daemon thread until ``stop()``."""
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, args=(interval_s,), name="telemetry",
                                        daemon=True)
        self._thread.start()

    def _run(self, interval_s: float) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            try:
                self.sample()
            except Exception as exc:  # keep sampling; the exporter's /healthz shows staleness
                self.errors += 1
                self.last_error = f"{type(exc).__name__}: {exc}"
            next_at += interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
