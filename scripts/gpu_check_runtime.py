"""Slice jobs for scripts/gpu-check-agent.sh, started and supervised by the agent's own runtime.

Each job is a real start order run by ``agent.runtime.manager.Runtime``: the sandbox (its own uid
and cgroup with the device allow-list, when the check runs as root with cgroups), the slice
environment with the memory contract, MPS per uid and GPU, the shim, log capture, and the memory
watchdog fed by the agent's telemetry, exactly as on a node. The worker (gpu_check_worker.py)
runs under a shell, so the GPU process is a child of the job's root as with real launchers; its
"GPUCHECK {json}" lines are read back from the job's captured stdout, and all jobs of a phase
start measuring together when the check creates their go-file.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

WORKER = Path(__file__).resolve().parent / "gpu_check_worker.py"


class SliceRun:
    """One agent runtime (state dir, sandbox, MPS mode) hosting the jobs of some phases."""

    def __init__(self, work: Path, name: str, backend, *, mps_mode: str, rehearse: bool, grace_s: float) -> None:
        from agent.attribution import job_ancestry
        from agent.enforce.mps import MpsController
        from agent.runtime.manager import Runtime
        from agent.sandbox.policy import Sandbox
        from agent.state import StateDir
        from agent.telemetry import TelemetrySampler

        self.work, self.backend = work, backend
        state = StateDir(work / f"{name}-state")
        jobs_root = work / "jobs"
        jobs_root.mkdir(parents=True, exist_ok=True)
        jobs_root.chmod(0o711)
        work.chmod(0o711)
        self.sandbox = Sandbox(mode="auto", state_root=state.root, jobs_root=jobs_root,
                               cgroup_parent="gpupool-gpucheck")
        self.mps = MpsController(mps_mode, state.root, applicable=not rehearse,
                                 reason_off="rehearsal: no GPU, no MPS", shared_dir=self.sandbox.mps_dir)
        self.reports: list[dict] = []
        self.runtime = Runtime(state, node_name="gpu-check", address="127.0.0.1", report=self._report,
                               mps=self.mps, backend=backend, watchdog_grace_s=grace_s, sandbox=self.sandbox,
                               log_flush_s=0.2)
        self.sampler = TelemetrySampler(backend, self.runtime.managed_jobs,
                                        ancestry=job_ancestry(self.runtime.job_pids),
                                        reported=self.runtime.reported_gpu_memory)
        self.rehearse = rehearse
        self.latest = None
        self._count = 0

    def _report(self, kind, job, **fields) -> None:
        self.reports.append({"kind": str(kind), "attempt": job.attempt_id, "ts": time.time(), **fields})

    def job(self, tag: str, gpu, milli: int, memory_mib: int, worker_args: list[str], *,
            wrapper: tuple[str, ...] = (), go_file: Path) -> "RuntimeJob":
        from controlplane.core.wire import JobIdentity, SliceSpec, StartOrder

        self._count += 1
        argv = ["sh", "-c", '"$@"; exit $?', "job", *wrapper, sys.executable, str(WORKER), "--tag", tag,
                *worker_args]
        env = {"GPUCHECK_GO_FILE": str(go_file), "PYTHONUNBUFFERED": "1"}
        if self.rehearse:
            env["GPUCHECK_REHEARSAL"] = "1"
        order = StartOrder(job_id=f"job-{tag}", attempt_id=f"att-{tag}-{self._count}", epoch=1, name=tag,
                           argv=argv, env=env, identity=JobIdentity(team="gpu-check", queue="default"),
                           grace_s=0.0,
                           slices=[SliceSpec(accelerator_uuid=gpu.uuid, compute_milli=milli,
                                             memory_mib=memory_mib, device_memory_mib=gpu.memory_mib)])
        return RuntimeJob(self, tag, order)

    def tick(self) -> None:
        """What the agent does every tick: exits, stops, telemetry, the memory watchdog."""
        self.runtime.tick()
        snap = self.latest = self.sampler.sample()
        self.runtime.enforce_memory({(r.attempt_id, r.accelerator_uuid): r.memory_used_mib for r in snap.slices},
                                    {(e.attempt_id, e.accelerator_uuid): e.memory_mib for e in snap.escapes})

    def close(self) -> None:
        for attempt in list(self.runtime.jobs):
            self.runtime.stop(attempt, "gpu check over", 0)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and self.runtime.running_attempts():
            self.runtime.tick()
            for job in list(self.runtime.jobs.values()):
                for stream in ("stdout", "stderr"):
                    from agent.runtime import logs

                    self.runtime.advance_offset(job.attempt_id, stream, logs.size(job.job_dir / f"{stream}.log"))
            time.sleep(0.05)
        self.mps.stop()


class RuntimeJob:
    """A slice job as the phases see it: events, readiness, go, stop, exit code, throughput."""

    def __init__(self, run: SliceRun, tag: str, order) -> None:
        self.run, self.tag, self.order = run, tag, order
        self.attempt = order.attempt_id
        self.events: list[dict] = []
        self._offset, self._partial = 0, ""
        self.stopped_at: float | None = None
        run.runtime.start(order)

    @property
    def record(self) -> dict:
        job = self.run.runtime.job(self.attempt)
        return job.record if job is not None else {}

    def poll_events(self) -> None:
        from agent.runtime import logs

        job = self.run.runtime.job(self.attempt)
        if job is None:
            return
        text, self._offset = logs.read_chunk(job.job_dir / "stdout.log", self._offset, 1 << 20)
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if line.startswith("GPUCHECK "):
                event = json.loads(line[len("GPUCHECK "):])
                event["received"] = time.time()
                self.events.append(event)

    def event(self, name: str) -> dict | None:
        self.poll_events()
        return next((e for e in self.events if e["event"] == name), None)

    @property
    def worker_pid(self) -> int | None:
        ready = self.event("ready")
        return ready["pid"] if ready else None

    @property
    def running(self) -> bool:
        return self.record.get("state") == "running"

    @property
    def exit_code(self) -> int | None:
        return (self.record.get("exit") or {}).get("exit_code")

    @property
    def failed_to_start(self) -> str | None:
        return next((r.get("reason") for r in self.run.reports
                     if r["attempt"] == self.attempt and r["kind"] == "failed_to_start"), None)

    def stop(self) -> None:
        self.run.runtime.stop(self.attempt, "gpu check: phase over", 0)

    def stderr_tail(self) -> list[str]:
        job = self.run.runtime.job(self.attempt)
        path = job.job_dir / "stderr.log" if job else None
        return path.read_text(errors="replace").splitlines()[-5:] if path and path.exists() else []

    def summary(self) -> dict:
        result = self.event("result") or {}
        out = {"tag": self.tag, "exit_code": self.exit_code, "tflops": result.get("tflops")}
        if self.event("oom"):
            out["oom"] = self.event("oom")["error"]
        if out["tflops"] is None and not self.event("oom"):
            out["stderr"] = self.failed_to_start or self.stderr_tail()
        return out


def run_jobs(run: SliceRun, jobs: list[RuntimeJob], go_file: Path, *, seconds: float, during=None,
             tick_s: float = 0.2, ready_timeout_s: float = 240.0) -> None:
    """Wait until every job is warm, start them together, tick the agent until they end, stop the rest."""
    try:
        deadline = time.monotonic() + ready_timeout_s
        while not all(j.event("ready") for j in jobs):
            run.tick()
            dead = [j for j in jobs if not j.running and not j.event("ready")]
            if dead or time.monotonic() > deadline:
                j = (dead or jobs)[0]
                raise RuntimeError(f"slice job {j.tag} never became ready: {j.summary()}")
            time.sleep(0.05)
        go_file.touch()
        end = time.monotonic() + seconds + 60
        while any(j.running for j in jobs) and time.monotonic() < end:
            run.tick()
            for j in jobs:
                if not j.running and j.stopped_at is None:
                    j.stopped_at = (j.record.get("exit") or {}).get("ts") or time.time()
            if during is not None:
                during()
            time.sleep(tick_s)
    finally:
        for j in jobs:
            if j.running:
                j.stop()
        end = time.monotonic() + 30
        while any(j.running for j in jobs) and time.monotonic() < end:
            run.tick()
            time.sleep(0.05)
        for j in jobs:
            j.poll_events()
