"""The node's job runtime: start orders -> processes, stops with grace, exits -> status reports.

Thread-safe (one lock). ``tick()`` is called a few times a second by the agent: it notices exits,
escalates SIGTERM to SIGKILL after the grace period, probes readiness, and emits the final report
once the job's logs are shipped (or a short flush window passed). Every state change is written to
the job's record first, so a restarted agent re-adopts running jobs and never reports twice.
"""

from __future__ import annotations

import logging
import shutil
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.enforce.env import is_fractional
from agent.enforce.mps import MpsController
from agent.enforce.watchdog import MemoryWatchdog
from agent.runtime import logs
from agent.runtime.container import ContainerRuntime
from agent.runtime.launch import StartError, prepare
from agent.runtime.ports import free_ports
from agent.runtime.process import JobProcess
from agent.runtime.progress import ProgressReader
from agent.sandbox.policy import Sandbox
from agent.state import StateDir
from agent.telemetry import ManagedJob
from controlplane.core.states import ProcessState
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
    progress: ProgressReader | None = None

    @property
    def attempt_id(self) -> str:
        return self.order.attempt_id

    @property
    def state(self) -> ProcessState:
        return ProcessState(self.record["state"])


class Runtime:
    def __init__(self, state: StateDir, *, node_name: str, address: str, report: Reporter,
                 mps: MpsController, backend: Any = None, watchdog_grace_s: float | None = 1.0,
                 log_flush_s: float = 3.0, keep_done_s: float = 7 * 86400,
                 sandbox: Sandbox | None = None, log_max_bytes: int = 64 * 1024 * 1024,
                 clock: Callable[[], float] = time.time) -> None:
        self.state = state
        self.node_name = node_name
        self.address = address
        self.report = report
        self.mps = mps
        self.backend = backend
        self.sandbox = sandbox or Sandbox(mode="off", state_root=state.root, jobs_root=state.root / "work")
        self.watchdog = MemoryWatchdog(watchdog_grace_s) if watchdog_grace_s is not None else None
        self.log_flush_s = log_flush_s
        self.keep_done_s = keep_done_s
        self.log_max_bytes = log_max_bytes
        self._inventory: list | None = None
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
            record: dict[str, Any] = {"order": order.model_dump(mode="json"), "state": ProcessState.RUNNING.value,
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
                self._release(job)
                if not isinstance(exc, StartError):
                    log.exception("cannot start attempt %s", order.attempt_id)
                    exc = StartError(f"agent error while starting: {exc}")
                record.update(state=ProcessState.DONE.value, exit={"exit_code": None, "reason": str(exc)})
                self.state.save_record(order.attempt_id, record)
                log.warning("job %s attempt %s failed to start: %s", order.job_id, order.attempt_id, exc)
                self.report(StatusKind.FAILED_TO_START, job, reason=str(exc))

    def _launch(self, job: Job) -> None:
        order, record = job.order, job.record
        missing = [s.accelerator_uuid for s in order.slices
                   if self._models() and s.accelerator_uuid not in self._models()]
        if missing:
            raise StartError(f"accelerator(s) {', '.join(missing)} not on node {self.node_name}")
        taken = {p for j in self.jobs.values() if j.state == ProcessState.RUNNING for p in j.record.get("ports", [])}
        ports = free_ports(order.port_count + 1, taken)
        prep = prepare(order, sandbox=self.sandbox, mps=self.mps, node=self.node_name,
                       ports=ports[:order.port_count], master_port=ports[-1],
                       watchdog_grace_s=self.watchdog.grace_s if self.watchdog else None,
                       log_max_bytes=self.log_max_bytes, models=self._models(), minors=self._minors(),
                       simulated=self._simulated())
        member = prep.member
        record["sandbox"] = {"uid": member.uid, "gid": member.gid, "work_dir": str(member.job_dir),
                             "cgroup": member.cgroup is not None,
                             "container": [member.container[0].name, member.container[0].binary,
                                           member.container[1]] if member.container else None}
        record["enforcement"] = prep.enforcement
        try:
            proc = JobProcess.launch(prep.plan, prep.env, job.job_dir, cgroup=member.cgroup,
                                     container=member.container)
        except OSError as exc:
            raise StartError(f"cannot start {prep.plan['argv'][0]!r}: {exc.strerror or exc}") from exc
        job.proc = proc
        job.progress = ProgressReader(job.job_dir / "stdout.log", [s.accelerator_uuid for s in order.slices])
        record.update(pid=proc.pid, start_ticks=proc.start_ticks, ports=ports, started_ts=self.clock())
        self.state.save_record(order.attempt_id, record)  # at once: a crash now still re-adopts it
        child = self._wait_child_pid(proc)
        record["child_pid"] = child
        self.state.save_record(order.attempt_id, record)
        self._attach(job)
        log.info("started job %s attempt %s pid %s%s: %s", order.job_id, order.attempt_id,
                 child or proc.pid, f" as uid {member.uid}" if member.uid is not None else "",
                 " ".join(prep.plan["argv"])[:200])
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
                if record["state"] == ProcessState.DONE and self._expired(job):
                    self._remove_dirs(order.attempt_id)  # retention of old job dirs
                    continue
                self.jobs[order.attempt_id] = job
                if record["state"] != ProcessState.RUNNING:
                    continue
                box = record.get("sandbox") or {}
                cont = box.get("container")
                job.proc = JobProcess.adopt(
                    record["pid"], record.get("start_ticks"), job.job_dir,
                    cgroup=self.sandbox.cgroup_for(order.attempt_id) if box.get("cgroup") else None,
                    container=(ContainerRuntime(cont[0], cont[1]), cont[2]) if cont else None)
                job.progress = ProgressReader(job.job_dir / "stdout.log",
                                              [s.accelerator_uuid for s in order.slices])
                if job.proc.running():
                    adopted.append(order.attempt_id)
                    self._attach(job)
                    log.info("re-adopted job %s attempt %s (pid %s)", order.job_id, order.attempt_id,
                             record["pid"])
        return adopted

    def _expired(self, job: Job) -> bool:
        """A finished job whose logs were shipped and that ended more than ``keep_done_s`` ago."""
        ended = (job.record.get("exit") or {}).get("ts") or job.record.get("started_ts") or 0
        return _shipped(job.record, job.job_dir) and self.clock() - ended > self.keep_done_s

    def _remove_dirs(self, attempt_id: str) -> None:
        shutil.rmtree(self.state.job_dir(attempt_id), ignore_errors=True)
        self.sandbox.dirs.remove(attempt_id)

    def housekeeping(self) -> list[str]:
        """Remove finished job directories (state and work) past retention; returns the attempts.

        Called on a schedule by the agent (not only at start). Work directories with no record
        (an agent crash between creating one and recording it) go once they are as old.
        """
        removed, keys = [], set()
        for record in self.state.load_records():
            attempt = record["order"]["attempt_id"]
            job = Job(StartOrder.model_validate(record["order"]), record, self.state.job_dir(attempt))
            with self.lock:
                if record["state"] != ProcessState.DONE or not self._expired(job) or (
                        attempt in self.jobs and self.jobs[attempt].state != ProcessState.DONE):
                    continue
                self.jobs.pop(attempt, None)
                self._remove_dirs(attempt)
                removed.append(attempt)
                keys.add(f"job:{job.order.job_id}")
        known = {self.state.job_dir(r["order"]["attempt_id"]).name for r in self.state.load_records()}
        for name in self.sandbox.dirs.attempts():
            path = self.sandbox.dirs.root / name
            if name not in known and not name.startswith(".") and \
                    self.clock() - path.stat().st_mtime > self.keep_done_s:
                self.sandbox.dirs.remove(name)
                removed.append(name)
        if keys and self.sandbox.identities is not None:
            with self.lock:
                live_keys = {f"job:{j.order.job_id}" for j in self.jobs.values()}
            self.sandbox.identities.release(keys - live_keys)
        return removed

    def stop_all(self, reason: str) -> None:
        """Stop every running job and wait for them (agent started with stop_jobs_on_exit)."""
        for attempt in [a for a, j in list(self.jobs.items()) if j.state == ProcessState.RUNNING]:
            job = self.jobs[attempt]
            self.stop(attempt, reason, job.order.grace_s)
        deadline = time.monotonic() + max([j.order.grace_s for j in self.jobs.values()] + [0]) + 5
        while time.monotonic() < deadline and any(j.state == ProcessState.RUNNING for j in list(self.jobs.values())):
            self.tick()
            time.sleep(0.1)
        for job in list(self.jobs.values()):
            if job.state == ProcessState.EXITED:
                job.record["exit"]["ts"] = 0  # report now, the logs follow from the files
                self._maybe_finish(job, self.clock())

    def _models(self) -> dict[str, str]:
        """uuid -> model of this node's accelerators (empty when unknown: orders are not refused)."""
        if self._inventory is None and self.backend is not None:
            try:
                self._inventory = list(self.backend.discover())
            except Exception as exc:  # noqa: BLE001 - unknown: do not refuse orders over it
                log.warning("cannot list accelerators: %s", exc)
                return {}
        return {a.uuid: a.model for a in self._inventory or []}

    def _minors(self) -> dict[str, int]:
        """uuid -> N of /dev/nvidiaN, for the device allow-list."""
        minors = getattr(self.backend, "device_minors", None)
        try:
            return dict(minors()) if minors is not None else {}
        except Exception as exc:  # noqa: BLE001 - no grant for them: the GPUs stay closed
            log.warning("cannot map accelerators to device nodes: %s", exc)
            return {}

    def _simulated(self) -> bool:
        return self.backend is not None and getattr(self.backend, "name", "").startswith("sim")

    def _attach(self, job: Job) -> None:
        """Tell a simulated backend which process runs on which slice (real GPUs need nothing)."""
        attach = getattr(self.backend, "attach", None)
        if attach is None or job.proc is None:
            return
        work_dir = Path((job.record.get("sandbox") or {}).get("work_dir") or job.job_dir)
        for s in job.order.slices:
            try:
                attach(job.record.get("child_pid") or job.proc.pid, s.accelerator_uuid,
                       s.compute_milli, s.memory_mib, memory_file=str(work_dir / "sim_memory_mib"))
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
            if job.state != ProcessState.RUNNING or job.record.get("stop"):
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
        """Notice exits, escalate stops, probe readiness, read progress, emit final reports."""
        now = self.clock()
        with self.lock:
            jobs = list(self.jobs.values())
        for job in jobs:
            with self.lock:
                if job.state == ProcessState.RUNNING:
                    if job.progress is not None:
                        job.progress.poll()
                    self._supervise(job, now)
                if job.state == ProcessState.EXITED:
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
        oom = self._oom_reason(job)
        if oom and (code not in (0, None) or error is None):
            error = oom
        job.record.update(state=ProcessState.EXITED.value, exit={"exit_code": code, "error": error, "ts": now})
        self.state.save_record(job.attempt_id, job.record)
        self._detach(job)
        self._release(job)
        if self.watchdog:
            self.watchdog.forget(job.attempt_id)
        log.info("attempt %s exited with code %s%s", job.attempt_id, code, f" ({error})" if error else "")

    def _oom_reason(self, job: Job) -> str | None:
        """'host memory limit exceeded: ...' when the kernel OOM-killed in the member's cgroup."""
        cg = job.proc.cgroup if job.proc is not None else None
        if cg is None:
            return None
        usage = cg.usage()
        if not usage.oom_kills:
            return None
        limit = (job.record.get("enforcement") or {}).get("memory", "")
        peak = f", peak {usage.memory_peak_bytes // 2**20} MiB" if usage.memory_peak_bytes else ""
        return (f"host memory limit exceeded: the kernel killed {usage.oom_kills} process(es) of the job "
                f"at its memory limit ({limit}{peak}); ask for more resources.memory_mib")

    def _release(self, job: Job) -> None:
        """The member is over: remove its cgroup, quit an MPS daemon no job of its uid needs."""
        cg = job.proc.cgroup if job.proc is not None else self.sandbox.cgroup_for(job.attempt_id)
        if cg is not None and not cg.remove():
            log.warning("cgroup %s of attempt %s could not be removed yet", cg.rel, job.attempt_id)
        box = job.record.get("sandbox") or {}
        if not is_fractional(job.order) or len(job.order.slices) != 1:
            return
        uuid = job.order.slices[0].accelerator_uuid
        with self.lock:
            still = any(j is not job and j.state == ProcessState.RUNNING and (j.record.get("sandbox") or {}).get("uid")
                        == box.get("uid") and any(s.accelerator_uuid == uuid for s in j.order.slices)
                        for j in self.jobs.values())
        if not still:
            self.mps.release(box.get("uid"), box.get("gid"), uuid)

    def _probe(self, job: Job, now: float) -> None:
        job.next_probe = now + 1.0
        port = job.record["ports"][0] if job.order.port_count else None
        if port is None:
            return
        import httpx  # here: the GPU check runs the runtime where httpx may be missing

        try:
            ok = httpx.get(f"http://127.0.0.1:{port}{job.order.readiness_path}", timeout=0.5).status_code < 400
        except httpx.HTTPError:
            ok = False
        if ok:
            job.record["ready"] = True
            self.state.save_record(job.attempt_id, job.record)
            self.report(StatusKind.READY, job, endpoint=f"http://{self.address}:{port}")

    def _maybe_finish(self, job: Job, now: float) -> None:
        drained = _shipped(job.record, job.job_dir)
        if not drained and now - job.record["exit"]["ts"] < self.log_flush_s:
            return
        code, error = job.record["exit"]["exit_code"], job.record["exit"]["error"]
        stop = job.record.get("stop")
        job.record["state"] = ProcessState.DONE.value
        self.state.save_record(job.attempt_id, job.record)
        if stop:
            self.report(StatusKind.KILLED, job, exit_code=code, reason=stop["reason"])
        elif error:
            self.report(StatusKind.EXITED, job, exit_code=code, reason=error)
        else:
            self.report(StatusKind.EXITED, job, exit_code=code,
                        reason=None if code == 0 else f"exited with code {code}")

    # ------------------------------------------------------------------ watchdog
    def enforce_memory(self, usage: dict[tuple[str, str], float],
                       outside: dict[tuple[str, str], float] | None = None) -> None:
        """Stop every job whose slice stayed over its memory limit past the watchdog grace.

        ``usage`` maps (attempt id, accelerator uuid) to the MiB its processes use now;
        ``outside`` the same for accelerators outside the job's slice (limit 0).
        """
        if self.watchdog is None:
            return
        with self.lock:
            running = {j.attempt_id for j in self.jobs.values() if j.state == ProcessState.RUNNING}
            limits = {(j.attempt_id, s.accelerator_uuid): float(s.memory_mib)
                      for j in self.jobs.values() if j.state == ProcessState.RUNNING for s in j.order.slices}
        usage = {k: v for k, v in usage.items() if k in limits}
        for key, mib in (outside or {}).items():
            if key[0] in running and key not in limits:
                usage[key], limits[key] = mib, 0.0
        for v in self.watchdog.check(usage, limits):
            log.warning("attempt %s: %s; stopping it", v.attempt_id, v.reason)
            job = self.jobs.get(v.attempt_id)
            self.stop(v.attempt_id, v.reason, job.order.grace_s if job else 0)

    # ------------------------------------------------------------------ queries
    def managed_jobs(self) -> list[ManagedJob]:
        """Running jobs as telemetry attributes them (root = the job's session leader)."""
        with self.lock:
            # labels from the identity the server put in the start order, never from the job's env
            return [ManagedJob(job_id=j.order.job_id, attempt_id=j.attempt_id,
                               pids=frozenset(j.proc.pids()), slices=tuple(j.order.slices),
                               queue=j.order.identity.queue if j.order.identity else "",
                               team=j.order.identity.team if j.order.identity else "",
                               user=(j.order.identity.user or "") if j.order.identity else "")
                    for j in self.jobs.values() if j.state == ProcessState.RUNNING and j.proc is not None]

    def root_pids(self) -> list[int]:
        """One pid (the shim) per running member."""
        with self.lock:
            return [j.proc.pid for j in self.jobs.values() if j.state == ProcessState.RUNNING and j.proc is not None]

    def job_pids(self) -> list[int]:
        """Every pid known to belong to a running member (its cgroup's, with the sandbox on)."""
        return [pid for j in self.managed_jobs() for pid in j.pids]

    def reported_gpu_memory(self) -> dict[tuple[str, str], float]:
        """(attempt, accelerator) -> MiB the running jobs report themselves (GPUPOOL_PROGRESS
        ``gpu_memory_mib``): the per-job figure under MPS, where NVML lists only the server."""
        with self.lock:
            return {(j.attempt_id, uuid): mib for j in self.jobs.values()
                    if j.state == ProcessState.RUNNING and j.progress is not None
                    for uuid, mib in j.progress.gpu_memory.items()}

    def running_attempts(self) -> list[str]:
        with self.lock:
            return [a for a, j in self.jobs.items() if j.state in (ProcessState.RUNNING, ProcessState.EXITED)]

    def job(self, attempt_id: str) -> Job | None:
        return self.jobs.get(attempt_id)

    def log_jobs(self) -> list[Job]:
        """Jobs whose logs may still hold unshipped bytes (finished, shipped ones are retired)."""
        with self.lock:
            out = []
            for attempt, j in list(self.jobs.items()):
                if j.state == ProcessState.DONE and _shipped(j.record, j.job_dir):
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


def _shipped(record: dict, job_dir: Path) -> bool:
    """Every byte of the member's output went to the server (or was dropped by the log cap)."""
    return all(record["offsets"][s] >= logs.size(job_dir / f"{s}.log") for s in STREAMS)
