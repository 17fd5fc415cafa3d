"""Plumbing for scripts/gpu-check-agent.sh: pydantic from bundled wheels, and slice jobs as processes.

The GPU test machine has torch but no pydantic, which the agent's wire types need; the wheels in
scripts/gpu-check-wheels (pydantic and pydantic-core for CPython 3.12 on x86_64 Linux, plus
their pure-Python dependencies) are unpacked into the check's work dir and put on sys.path.
Each slice job runs like the agent runs one: its own session, started through a shell (so the
GPU process is a child of the job's root, as with real launchers), environment from the agent's
own enforcement code, stopped by killing its process group.
"""

from __future__ import annotations

import json
import os
import platform
import signal
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

WHEELS = Path(__file__).resolve().parent / "gpu-check-wheels"
WORKER = Path(__file__).resolve().parent / "gpu_check_worker.py"


def ensure_pydantic(target: Path) -> str:
    """Import pydantic, unpacking the bundled wheels first if it is not installed."""
    try:
        import pydantic

        return f"installed {pydantic.VERSION}"
    except ImportError:
        pass
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    wheels = [w for w in WHEELS.glob("*.whl") if "-py3-none-any" in w.name or f"-{tag}-{tag}-" in w.name]
    if not any(w.name.startswith("pydantic_core-") for w in wheels) or platform.machine() != "x86_64":
        raise SystemExit(
            f"error: pydantic is not installed and {WHEELS} holds no pydantic-core wheel for {tag} on "
            f"{platform.machine()}; install pydantic, or add that wheel (pip download pydantic-core "
            f"--only-binary=:all: --python-version {sys.version_info.major}.{sys.version_info.minor} -d {WHEELS})"
        )
    target.mkdir(parents=True, exist_ok=True)
    for wheel in wheels:
        with zipfile.ZipFile(wheel) as zf:
            zf.extractall(target)
    sys.path.insert(0, str(target))
    import pydantic

    return f"bundled wheel {pydantic.VERSION} unpacked in {target}"


class Job:
    """One slice job: a shell (the job's root, session leader) running the worker."""

    def __init__(self, tag: str, worker_args: list[str], env: dict[str, str]) -> None:
        self.tag = tag
        self.events: list[dict] = []
        self.stderr_tail: list[str] = []
        argv = ["sh", "-c", '"$@"; exit $?', "job", sys.executable, str(WORKER), "--tag", tag, *worker_args]
        self.proc = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True, start_new_session=True)
        self.stopped_at: float | None = None
        self._ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("GPUCHECK "):
                event = json.loads(line[len("GPUCHECK "):])
                event["received"] = time.time()
                self.events.append(event)
                if event["event"] == "ready":
                    self._ready.set()
        self._ready.set()  # exited: stop waiting

    def _read_err(self) -> None:
        for line in self.proc.stderr:
            self.stderr_tail = (self.stderr_tail + [line.rstrip()])[-5:]

    def event(self, name: str) -> dict | None:
        return next((e for e in self.events if e["event"] == name), None)

    @property
    def worker_pid(self) -> int | None:
        ready = self.event("ready")
        return ready["pid"] if ready else None

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout) and self.event("ready") is not None

    def go(self) -> None:
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        """Kill the job's whole process group (root and worker) and reap it."""
        running = self.proc.poll() is None
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self.proc.wait(timeout=30)
        if running and self.stopped_at is None:
            self.stopped_at = time.time()

    def summary(self) -> dict:
        result = self.event("result") or {}
        out = {"tag": self.tag, "exit_code": self.proc.returncode, "tflops": result.get("tflops")}
        if self.event("oom"):
            out["oom"] = self.event("oom")["error"]
        if out["tflops"] is None and self.stderr_tail and not self.event("oom"):
            out["stderr"] = self.stderr_tail
        return out


def run_jobs(jobs: list[Job], *, seconds: float, during=None, on_ready=None, tick_s: float = 0.2,
             ready_timeout_s: float = 240.0) -> None:
    """Start ``jobs`` together once all are warm, call ``during()`` every tick, reap them all."""
    try:
        deadline = time.monotonic() + ready_timeout_s
        for job in jobs:
            if not job.wait_ready(max(1.0, deadline - time.monotonic())):
                raise RuntimeError(f"slice job {job.tag} never became ready (exit code "
                                   f"{job.proc.poll()}): {job.stderr_tail}")
        if on_ready is not None:
            on_ready(jobs)
        for job in jobs:
            job.go()
        end = time.monotonic() + seconds + 60
        while any(j.proc.poll() is None for j in jobs) and time.monotonic() < end:
            if during is not None:
                during()
            time.sleep(tick_s)
    finally:
        for job in jobs:
            job.stop()  # reaps the finished ones, kills any still running after the window
