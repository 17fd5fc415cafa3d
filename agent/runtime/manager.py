"""The node's job runtime: start orders -> processes, stops with grace, exits -> status reports.

Thread-safe (one lock). ``tick()`` is called a few times a second by the agent: it notices exits,
escalates SIGTERM to SIGKILL after the grace period, probes readiness, and emits the final report
once the job's logs are shipped (or a short flush window passed). Every state change is written to
the job's record first, so a restarted agent re-adopts running jobs and never reports twice.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from agent.enforce.env import MpsSettings, inherited_env, is_fractional, slice_env
from agent.enforce.mps import MpsController
from agent.enforce.watchdog import MemoryWatchdog
from agent.runtime import logs
from agent.runtime.ports import free_ports
from agent.runtime.process import JobProcess
from agent.state import StateDir
from agent.telemetry import ManagedJob
from controlplane.core.wire import StartOrder, StatusKind

log = logging.getLogger("gpupool.agent.runtime")
STREAMS = ("stdout", "stderr")
Reporter = Callable[..., None]  # report(kind, job, pid=, exit_code=, endpoint=, reason=)


@dataclass(slots=True)
class Job:
    order: StartOrder
    record: dict[str, Any]
    job_dir: Path
    proc: JobProcess | None = None
    next_probe: float = 0.0

    @property
    def attempt_id(self) -> str:
        return self.order.attempt_id

    @property
    def state(self) -> str:
        return self.record["state"]  # running | exited | done


def resolve_argv(argv: list[str]) -> list[str]:
    """A leading "python" (or python3) means the agent's own interpreter."""
    if argv and argv[0] in ("python", "python3"):
        return [sys.executable, *argv[1:]]
    return list(argv)


class Runtime:
    def __init__(self, state: StateDir, *, node_name: str, address: str, report: Reporter,
                 mps: MpsController, backend: Any = None, watchdog_grace_s: float | None = 1.0,
                 log_flush_s: float = 3.0, keep_done_s: float = 7 * 86400,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.node_name = node_name
        self.address = address
        self.report = report
        self.mps = mps
        self.backend = backend
        self.watchdog = MemoryWatchdog(watchdog_grace_s) if watchdog_grace_s is not None else None
        self.log_flush_s = log_flush_s
        self.keep_done_s = keep_done_s
        self._uuids: set[str] | None = None
        self.clock = clock
        self.jobs: dict[str, Job] = {}
        self.finished: set[str] = set()  # done and logs shipped: only remembered to ignore replays
        self.lock = threading.RLock()

    # ------------------------------------------------------------------ start / adopt
    def start(self, order: StartOrder) -> None:
        """Start ``order`` unless this attempt is already known (orders are replayed)."""
        with self.lock:
            if order.attempt_id in self.jobs or order.attempt_id in self.finished:
                return
            job_dir = self.state.job_dir(order.attempt_id)
            record: dict[str, Any] = {"order": order.model_dump(mode="json"), "state": "running",
                                      "offsets": {s: 0 for s in STREAMS}, "stop": None,
                                      "ready": False, "enforcement": {}}
            job = Job(order, record, job_dir)
            self.jobs[order.attempt_id] = job
            try:
                self._launch(job)
            except Exception as exc:  # noqa: BLE001 - any failure before launch: report it
                if job.proc is not None:  # launched: supervision takes it from here
                    log.exception("after starting attempt %s", order.attempt_id)
                    return
                if not isinstance(exc, _StartError):
                    log.exception("cannot start attempt %s", order.attempt_id)
                    exc = _StartError(f"agent error while starting: {exc}")
                record.update(state="done", exit={"exit_code": None, "reason": str(exc)})
                self.state.save_record(order.attempt_id, record)
                log.warning("job %s attempt %s failed to start: %s", order.job_id, order.attempt_id, exc)
                self.report(StatusKind.FAILED_TO_START, job, reason=str(exc))

    def _launch(self, job: Job) -> None:
        order, record = job.order, job.record
        argv = resolve_argv(order.argv)
        if not argv:
            raise _StartError("empty command")
        taken = {p for j in self.jobs.values() if j.state == "running" for p in j.record.get("ports", [])}
        ports = free_ports(order.port_count + 1, taken)
        output_dir = job.job_dir / "output"
        mps = self.mps.settings() if is_fractional(order) else MpsSettings(mode=self.mps.mode,
                                                                           detail=self.mps.reason_off)
        se = slice_env(order, node=self.node_name, ports=ports[:order.port_count],
                       master_port=ports[-1], output_dir=str(output_dir), mps=mps,
                       watchdog_grace_s=self.watchdog.grace_s if self.watchdog else None)
        env = {**inherited_env(dict(os.environ)), **order.env, **se.env}
        if order.spec is not None:  # packaged workloads read their spec from a file, never argv
            spec_file = job.job_dir / "spec.json"
            fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(order.spec, f)
            env["GPUPOOL_SPEC_FILE"] = str(spec_file)
        if self.backend is not None and getattr(self.backend, "name", "").startswith("sim"):
            env["GPUPOOL_SIM_MEMORY_FILE"] = str(job.job_dir / "sim_memory_mib")
        cwd = order.workdir or str(job.job_dir)
        if not os.path.isdir(cwd):
            raise _StartError(f"workdir {cwd!r} does not exist on node {self.node_name}")
        known = self._known_uuids()
        missing = [s.accelerator_uuid for s in order.slices if known and s.accelerator_uuid not in known]
        if missing:
            raise _StartError(f"accelerator(s) {', '.join(missing)} not on node {self.node_name}")
        exe = argv[0]
        if os.sep in exe:
            full = exe if os.path.isabs(exe) else os.path.join(cwd, exe)
            if not (os.path.isfile(full) and os.access(full, os.X_OK)):
                raise _StartError(f"command not found or not executable: {exe!r}")
        elif shutil.which(exe, path=env.get("PATH")) is None:
            raise _StartError(f"command not found on node {self.node_name}: {exe!r}")
        if env["GPUPOOL_OUTPUT_DIR"] == str(output_dir):
            output_dir.mkdir(parents=True, exist_ok=True)
        try:
            proc = JobProcess.launch(argv, env, cwd, job.job_dir)
        except OSError as exc:
            raise _StartError(f"cannot start {exe!r}: {exc.strerror or exc}") from exc
        job.proc = proc
        record.update(pid=proc.pid, start_ticks=proc.start_ticks, ports=ports, started_ts=self.clock(),
                      enforcement=se.enforcement)
        self.state.save_record(order.attempt_id, record)  # at once: a crash now still re-adopts it
        child = self._wait_child_pid(proc)
        record["child_pid"] = child
        self.state.save_record(order.attempt_id, record)
        self._attach(job)
        log.info("started job %s attempt %s pid %s: %s", order.job_id, order.attempt_id,
                 child or proc.pid, " ".join(argv)[:200])
        self.report(StatusKind.STARTED, job, pid=child or proc.pid)

    @staticmethod
    def _wait_child_pid(proc: JobProcess, timeout: float = 1.0) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pid = proc.child_pid()
            if pid is not None or not proc.running():
                return pid
            time.sleep(0.01)
        return None

    def adopt_all(self) -> list[str]:
        """Load every record; re-attach to jobs still running. Returns the adopted attempt ids."""
        adopted = []
        with self.lock:
            for record in self.state.load_records():
                order = StartOrder.model_validate(record["order"])
                job = Job(order, record, self.state.job_dir(order.attempt_id))
                if record["state"] == "done" and self._expired(job):
                    shutil.rmtree(job.job_dir, ignore_errors=True)  # retention of old job dirs
                    continue
                self.jobs[order.attempt_id] = job
                if record["state"] != "running":
                    continue
                job.proc = JobProcess.adopt(record["pid"], record.get("start_ticks"), job.job_dir)
                if job.proc.running():
                    adopted.append(order.attempt_id)
                    self._attach(job)
                    log.info("re-adopted job %s attempt %s (pid %s)", order.job_id, order.attempt_id,
                             record["pid"])
        return adopted

    def _expired(self, job: Job) -> bool:
        """A finished job whose logs were shipped and that ended more than ``keep_done_s`` ago."""
        ended = (job.record.get("exit") or {}).get("ts") or job.record.get("started_ts") or 0
        shipped = all(job.record["offsets"][s] >= logs.size(job.job_dir / f"{s}.log") for s in STREAMS)
        return shipped and self.clock() - ended > self.keep_done_s

    def stop_all(self, reason: str) -> None:
        """Stop every running job and wait for them (agent started with stop_jobs_on_exit)."""
        for attempt in [a for a, j in list(self.jobs.items()) if j.state == "running"]:
            job = self.jobs[attempt]
            self.stop(attempt, reason, job.order.grace_s)
        deadline = time.monotonic() + max([j.order.grace_s for j in self.jobs.values()] + [0]) + 5
        while time.monotonic() < deadline and any(j.state == "running" for j in list(self.jobs.values())):
            self.tick()
            time.sleep(0.1)
        for job in list(self.jobs.values()):
            if job.state == "exited":
                job.record["exit"]["ts"] = 0  # report now, the logs follow from the files
                self._maybe_finish(job, self.clock())

    def _known_uuids(self) -> set[str]:
        if self._uuids is None and self.backend is not None:
            try:
                self._uuids = {a.uuid for a in self.backend.discover()}
            except Exception as exc:  # noqa: BLE001 - unknown: do not refuse orders over it
                log.warning("cannot list accelerators: %s", exc)
                return set()
        return self._uuids or set()

    def _attach(self, job: Job) -> None:
        """Tell a simulated backend which process runs on which slice (real GPUs need nothing)."""
        attach = getattr(self.backend, "attach", None)
        if attach is None or job.proc is None:
            return
        for s in job.order.slices:
            try:
                attach(job.record.get("child_pid") or job.proc.pid, s.accelerator_uuid,
                       s.compute_milli, s.memory_mib, memory_file=str(job.job_dir / "sim_memory_mib"))
            except (TypeError, ValueError) as exc:
                log.warning("backend attach of attempt %s failed: %s", job.attempt_id, exc)

    def _detach(self, job: Job) -> None:
        detach = getattr(self.backend, "detach", None)
        if detach is not None and job.proc is not None:
            detach(job.record.get("child_pid") or job.proc.pid)

    # ------------------------------------------------------------------ stop
    def stop(self, attempt_id: str, reason: str, grace_s: float, epoch: int | None = None) -> bool:
        """SIGTERM the job's group now, SIGKILL after ``grace_s``. False if the attempt is unknown."""
        with self.lock:
            job = self.jobs.get(attempt_id)
            if job is None:
                return False
            if job.state != "running" or job.record.get("stop"):
                return True
            if epoch is not None and epoch < job.order.epoch:
                log.info("ignoring stop of %s from epoch %s < start epoch %s", attempt_id, epoch,
                         job.order.epoch)
                return True
            job.record["stop"] = {"reason": reason, "grace_s": grace_s, "ts": self.clock(),
                                  "killed": False}
            self.state.save_record(attempt_id, job.record)
            log.info("stopping attempt %s (%s), grace %.1f s", attempt_id, reason, grace_s)
            assert job.proc is not None
            job.proc.signal(signal.SIGTERM)
            if grace_s <= 0:
                self._kill(job)
            return True

    def _kill(self, job: Job) -> None:
        job.record["stop"]["killed"] = True
        self.state.save_record(job.attempt_id, job.record)
        assert job.proc is not None
        job.proc.signal(signal.SIGKILL)

    # ------------------------------------------------------------------ supervision
    def tick(self) -> None:
        """Notice exits, escalate stops, probe readiness, emit final reports."""
        now = self.clock()
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            with self.lock:
                if job.state == "running":
                    self._supervise(job, now)
                if job.state == "exited":
                    self._maybe_finish(job, now)

    def _supervise(self, job: Job, now: float) -> None:
        assert job.proc is not None
        if job.proc.running():
            stop = job.record.get("stop")
            if stop and not stop["killed"] and now - stop["ts"] >= stop["grace_s"]:
                log.info("attempt %s still running after %.1f s grace: SIGKILL", job.attempt_id,
                         stop["grace_s"])
                self._kill(job)
            elif job.order.readiness_path and not job.record["ready"] and now >= job.next_probe:
                self._probe(job, now)
            return
        info = job.proc.exit_info()
        stop = job.record.get("stop")
        if info is not None:
            code, error = info.get("exit_code"), info.get("error")
        else:
            rc = job.proc.shim_returncode()
            code = 128 - rc if rc is not None and rc < 0 else rc
            if code is None and stop and stop.get("killed"):
                code = 128 + signal.SIGKILL
            error = None if code is not None else "process ended while the agent was down; exit code unknown"
        job.record.update(state="exited", exit={"exit_code": code, "error": error, "ts": now})
        self.state.save_record(job.attempt_id, job.record)
        self._detach(job)
        if self.watchdog:
            self.watchdog.forget(job.attempt_id)
        log.info("attempt %s exited with code %s", job.attempt_id, code)

    def _probe(self, job: Job, now: float) -> None:
        job.next_probe = now + 1.0
        port = job.record["ports"][0] if job.order.port_count else None
        if port is None:
            return
        try:
            ok = httpx.get(f"http://127.0.0.1:{port}{job.order.readiness_path}", timeout=0.5).status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            job.record["ready"] = True
            self.state.save_record(job.attempt_id, job.record)
            self.report(StatusKind.READY, job, endpoint=f"http://{self.address}:{port}")

    def _maybe_finish(self, job: Job, now: float) -> None:
        drained = all(job.record["offsets"][s] >= logs.size(job.job_dir / f"{s}.log") for s in STREAMS)
        if not drained and now - job.record["exit"]["ts"] < self.log_flush_s:
            return
        code, error = job.record["exit"]["exit_code"], job.record["exit"]["error"]
        stop = job.record.get("stop")
        job.record["state"] = "done"
        self.state.save_record(job.attempt_id, job.record)
        if stop:
            self.report(StatusKind.KILLED, job, exit_code=code, reason=stop["reason"])
        elif error:
            self.report(StatusKind.EXITED, job, exit_code=code, reason=error)
        else:
            self.report(StatusKind.EXITED, job, exit_code=code,
                        reason=None if code == 0 else f"exited with code {code}")

    # ------------------------------------------------------------------ watchdog
    def enforce_memory(self, usage: dict[tuple[str, str], float]) -> None:
        """Stop every job whose slice stayed over its memory limit past the watchdog grace.

        ``usage`` maps (attempt id, accelerator uuid) to the MiB its processes use now.
        """
        if self.watchdog is None:
            return
        with self.lock:
            limits = {(j.attempt_id, s.accelerator_uuid): float(s.memory_mib)
                      for j in self.jobs.values() if j.state == "running" for s in j.order.slices}
        usage = {k: v for k, v in usage.items() if k in limits}
        for v in self.watchdog.check(usage, limits):
            log.warning("attempt %s: %s; stopping it", v.attempt_id, v.reason)
            job = self.jobs.get(v.attempt_id)
            self.stop(v.attempt_id, v.reason, job.order.grace_s if job else 0)

    # ------------------------------------------------------------------ queries
    def managed_jobs(self) -> list[ManagedJob]:
        """Running jobs as telemetry attributes them (root = the job's session leader)."""
        with self.lock:
            return [ManagedJob(job_id=j.order.job_id, attempt_id=j.attempt_id,
                               pids=frozenset({j.proc.pid}), slices=tuple(j.order.slices),
                               queue=j.order.env.get("GPUPOOL_QUEUE", ""),
                               team=j.order.env.get("GPUPOOL_TEAM", ""))
                    for j in self.jobs.values() if j.state == "running" and j.proc is not None]

    def root_pids(self) -> list[int]:
        return [pid for j in self.managed_jobs() for pid in j.pids]

    def running_attempts(self) -> list[str]:
        with self.lock:
            return [a for a, j in self.jobs.items() if j.state in ("running", "exited")]

    def job(self, attempt_id: str) -> Job | None:
        return self.jobs.get(attempt_id)

    def log_jobs(self) -> list[Job]:
        """Jobs whose logs may still hold unshipped bytes (finished, shipped ones are retired)."""
        with self.lock:
            out = []
            for attempt, j in list(self.jobs.items()):
                if j.state == "done" and all(j.record["offsets"][s] >= logs.size(j.job_dir / f"{s}.log")
                                             for s in STREAMS):
                    del self.jobs[attempt]
                    self.finished.add(attempt)
                else:
                    out.append(j)
            return out

    def advance_offset(self, attempt_id: str, stream: str, offset: int) -> None:
        with self.lock:
            job = self.jobs[attempt_id]
            if offset > job.record["offsets"][stream]:
                job.record["offsets"][stream] = offset
                self.state.save_record(attempt_id, job.record)

    def shutdown(self) -> None:
        """Agent exit: leave jobs running (a restart re-adopts them); stop MPS only when idle."""
        if not self.root_pids():
            self.mps.stop()


class _StartError(Exception):
    """The order cannot be started; the message says why (reported as failed_to_start)."""
