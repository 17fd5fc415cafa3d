"""Helpers for end-to-end tests: real agent processes (python -m agent) and a small API client."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import httpx

from tests.support.server import free_port
from tests.support.waiting import wait_until  # noqa: F401 - re-exported for the e2e tests

ROOT = Path(__file__).resolve().parents[2]
FINAL = {"succeeded", "failed", "cancelled"}


class AgentProc:
    """One node agent as a separate process, on simulated GPUs, with fast loops for tests."""

    def __init__(self, server_url: str, bootstrap_token: str, root: Path, name: str,
                 gpus: str = "1x1xH100-80GB", heartbeat_s: float = 0.5,
                 extra_args: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.server_url, self.token, self.name, self.gpus = server_url, bootstrap_token, name, gpus
        self.state_dir = root / f"agent-{name}"
        self.log_path = root / f"agent-{name}.log"
        self.heartbeat_s = heartbeat_s
        self.extra_args = extra_args or []
        self.env = env or {}  # added to the agent's environment (e.g. GPUPOOL_SIM_FAULTS_FILE)
        # job directories must be reachable by the jobs' own uids (pytest's tmp dirs are 0700)
        self.jobs_dir = Path(tempfile.mkdtemp(prefix="gpupool-e2e-jobs-"))
        self.jobs_dir.chmod(0o711)
        atexit.register(shutil.rmtree, self.jobs_dir, True)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> "AgentProc":
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env)
        cmd = [sys.executable, "-m", "agent", "--server", self.server_url, "--token", self.token,
               "--node-name", self.name, "--simulate", self.gpus, "--state-dir", str(self.state_dir),
               "--exporter-port", str(self.port), "--heartbeat-interval", str(self.heartbeat_s),
               "--poll-wait", "2", "--tick", "0.2", "--memory-grace", "0.5", "--log-level", "DEBUG",
               "--jobs-dir", str(self.jobs_dir), *self.extra_args]
        self.proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=open(self.log_path, "ab"),
                                     stderr=subprocess.STDOUT)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def health(self) -> dict:
        try:
            return httpx.get(f"http://127.0.0.1:{self.port}/healthz", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def wait_connected(self, timeout: float = 30) -> dict:
        def ok():
            assert self.proc is not None and self.proc.poll() is None, self.log()
            h = self.health()
            return h if h.get("registered") and h.get("connected") else None
        return wait_until(ok, timeout, f"agent {self.name} connected")

    def kill(self) -> None:
        """SIGKILL: the agent dies at once, its jobs (own sessions) keep running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()

    def job_pids(self, job_id: str | None = None) -> list[int]:
        """Session leaders (shims) of the jobs this agent started (all, or one job's), from its state."""
        return [pid for pid, _ in self._job_procs(job_id)]

    def _job_procs(self, job_id: str | None = None) -> list[tuple[int, int | None]]:
        import json

        out = []
        for rec in (self.state_dir / "jobs").glob("*/record.json"):
            data = json.loads(rec.read_text())
            if data.get("pid") and (job_id is None or data["order"]["job_id"] == str(job_id)):
                out.append((int(data["pid"]), data.get("start_ticks")))
        return out

    def job_alive(self, job_id: str) -> bool:
        """True while any process of this job's attempts on this node still runs."""
        from agent.procfs import is_alive

        return any(is_alive(pid, ticks) for pid, ticks in self._job_procs(job_id))

    def reap_jobs(self) -> None:
        """Kill every job process this agent started (test teardown: nothing may outlive a test)."""
        import hashlib
        import json

        from agent.sandbox.cgroups import JobCgroup, detect_cgroups

        key = hashlib.sha256(str(self.state_dir.resolve()).encode()).hexdigest()[:8]
        for rec in (self.state_dir / "jobs").glob("*/record.json"):
            data = json.loads(rec.read_text())
            for pid, group in ((data.get("child_pid"), True), (data.get("pid"), False)):
                try:
                    if pid:
                        (os.killpg if group else os.kill)(int(pid), signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if (data.get("sandbox") or {}).get("cgroup"):
                JobCgroup(detect_cgroups(), "gpupool", f"{key}-{data['order']['attempt_id']}").remove()


class Api:
    """Just enough of the REST API for the tests (admin token)."""

    def __init__(self, url: str, token: str) -> None:
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=15)

    def submit(self, spec: dict) -> dict:
        r = self.http.post("/api/v1/jobs", json=spec)
        assert r.status_code in (200, 201), r.text
        return r.json()

    def job(self, job_id: str) -> dict:
        r = self.http.get(f"/api/v1/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def cancel(self, job_id: str) -> dict:
        r = self.http.post(f"/api/v1/jobs/{job_id}/cancel")
        assert r.status_code == 200, r.text
        return r.json()

    def logs(self, job_id: str) -> str:
        r = self.http.get(f"/api/v1/jobs/{job_id}/logs", params={"tail": 10000})
        assert r.status_code == 200, r.text
        return r.text

    def events(self, job_id: str) -> list[dict]:
        r = self.http.get(f"/api/v1/jobs/{job_id}/events")
        assert r.status_code == 200, r.text
        return r.json()["items"]

    def nodes(self) -> list[dict]:
        return self.http.get("/api/v1/nodes").json()["items"]

    def wait_status(self, job_id: str, statuses: set[str] | str, timeout: float = 30) -> dict:
        statuses = {statuses} if isinstance(statuses, str) else set(statuses)

        seen: dict = {}

        def check():
            job = seen["job"] = self.job(job_id)
            return job if job["status"] in statuses | FINAL else None
        try:
            job = wait_until(check, timeout, f"job {job_id} {statuses}", interval=0.2)
        except AssertionError as e:  # timed out: say where the job stood
            job = seen.get("job") or {}
            raise AssertionError(f"{e}; it is {job.get('status')} ({job.get('pending_reason') or ''}): "
                                 f"{job}\n{self.logs(job_id)[-3000:]}") from None
        if job["status"] not in statuses:
            raise AssertionError(f"job {job_id} ended {job['status']}: {job}\n{self.logs(job_id)}")
        return job


def py_job(name: str, code: str, gpu: float = 0.25, **extra: Any) -> dict:
    """A custom job spec running ``python -c code`` (the agent's interpreter)."""
    spec = {"name": name, "command": ["python", "-c", code], "resources": {"gpu": gpu, "cpu_milli": 100,
            "memory_mib": 64}, "grace_s": 2}
    spec.update(extra)
    return spec


def wait_file_code(path: Path) -> str:
    """Python source that waits until ``path`` exists (a test's release switch)."""
    return f"import os,time\nwhile not os.path.exists({str(path)!r}): time.sleep(0.05)\n"


class ServerProc:
    """The control plane as its own process (``tests.support.server.start_server``) on a fixed
    loopback port and SQLite file, so a test can stop it and start it again where agents expect it.
    """

    def __init__(self, root: Path, *, port: int | None = None, env: dict[str, str] | None = None) -> None:
        self.root = root
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.admin_token = "gpa_e2e_admin_" + os.urandom(6).hex()
        self.bootstrap_token = "gpb_e2e_boot_" + os.urandom(6).hex()
        self.db_url = f"sqlite:///{root / 'gpupool.db'}"
        self.env = env or {}
        self.handle = None
        self.log_path = root / "server.log"

    def start(self, timeout: float = 60) -> "ServerProc":
        from tests.support.server import start_server

        env = dict(self.env)
        if self.handle is not None:
            # the database already holds the admin token; seeding it again is not needed
            env["GPUPOOL_ADMIN_TOKEN"] = ""
        self.handle = start_server(self.db_url, env, port=self.port, home=self.root / "home",
                                   admin_token=self.admin_token, bootstrap_token=self.bootstrap_token,
                                   timeout=timeout, log_path=self.log_path)
        return self

    def stop(self) -> None:
        if self.handle is not None:
            self.handle.stop(timeout=20)
