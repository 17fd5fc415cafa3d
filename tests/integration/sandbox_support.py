"""Sandbox tests on the real thing: root, cgroups, device nodes, podman. No mocks of the kernel.

Without root or cgroups (or podman, for container tests) the tests skip, and fail instead when
GPUPOOL_REQUIRE_SANDBOX=1 (CI sets it). Every runtime here uses a cgroup parent of its own and a
world-traversable scratch root (pytest's tmp dirs are 0700, which job uids cannot enter).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

from agent.enforce.mps import MpsController
from agent.runtime import logs
from agent.runtime.manager import Runtime
from agent.sandbox.cgroups import JobCgroup, detect_cgroups
from agent.sandbox.kill import remove_tree
from agent.sandbox.policy import Sandbox
from agent.state import StateDir
from controlplane.core.wire import JobIdentity, SliceSpec, StartOrder
from tests.support.waiting import wait_until

REQUIRE = os.environ.get("GPUPOOL_REQUIRE_SANDBOX") == "1"
PARENT = f"gpupool-test-{os.getpid()}"


def need(ok: bool, why: str) -> None:
    """Skip the test without ``ok``; in CI (GPUPOOL_REQUIRE_SANDBOX=1) fail instead."""
    if ok:
        return
    if REQUIRE:
        pytest.fail(f"GPUPOOL_REQUIRE_SANDBOX=1 but {why}")
    pytest.skip(why)


def job_python() -> str:
    """A python3 job uids can run (the test venv's may live under a 0700 home)."""
    from agent.sandbox.jobdirs import closed_to_others

    for path in ("/usr/bin/python3", "/usr/local/bin/python3", "/bin/python3"):
        if os.path.exists(path) and closed_to_others(Path(os.path.realpath(path))) is None:
            return path
    pytest.skip("no python3 that other users can run")


class Reports(list):
    def __call__(self, kind, job, **fields):
        self.append({"kind": kind, "attempt": job.attempt_id, **fields})

    def of(self, attempt: str) -> list[dict]:
        return [r for r in self if r["attempt"] == attempt]


@pytest.fixture
def host():
    """The machine can sandbox jobs: root with a usable cgroup hierarchy."""
    need(os.geteuid() == 0, "the sandbox needs root (jobs get their own uids and cgroups)")
    support = detect_cgroups()
    need(support.usable, f"no usable cgroups: {support.detail}")
    return support


@pytest.fixture
def world(host):
    """A scratch root other uids can traverse (0711), removed afterwards with its cgroups."""
    root = Path(tempfile.mkdtemp(prefix="gpupool-sbx-"))
    root.chmod(0o711)
    runtimes: list[Runtime] = []
    yield root, runtimes
    for rt in runtimes:
        for attempt in list(rt.jobs):
            cg = rt.sandbox.cgroup_for(attempt)
            if cg is not None:
                cg.remove()
    shutil.rmtree(root, ignore_errors=True)
    for mount in host.mounts.values():
        remove_tree(os.path.join(mount, PARENT))


def make_runtime(world, *, backend=None, log_max_bytes: int = 64 * 1024 * 1024, keep_done_s: float = 3600,
                 **sandbox_kw) -> tuple[Runtime, Reports]:
    root, runtimes = world
    state = StateDir(root / f"state{len(runtimes)}")
    sandbox = Sandbox(mode="on", state_root=state.root, jobs_root=root / "jobs", cgroup_parent=PARENT,
                      **sandbox_kw)
    reports = Reports()
    rt = Runtime(state, node_name="n1", address="127.0.0.1", report=reports,
                 mps=MpsController("off", root), backend=backend, sandbox=sandbox, log_flush_s=0.3,
                 log_max_bytes=log_max_bytes, keep_done_s=keep_done_s)
    runtimes.append(rt)
    return rt, reports


def order(attempt: str, argv: list[str], *, team: str = "ml", cpu: int | None = None,
          mem: int | None = None, slices: list[SliceSpec] | None = None, **kw) -> StartOrder:
    return StartOrder(job_id="job-" + attempt, attempt_id=attempt, epoch=1, name=attempt, argv=argv,
                      identity=JobIdentity(team=team, queue="default"), grace_s=kw.pop("grace_s", 2.0),
                      slices=slices or [], cpu_milli=cpu or 0, memory_mib=mem or 0, **kw)


def until(rt: Runtime, pred, timeout: float = 30.0, what: str = "condition"):
    """Tick the runtime until ``pred()`` holds."""
    def check():
        rt.tick()
        return pred()
    return wait_until(check, timeout, what, interval=0.05)


def finished(rt: Runtime, attempt: str, timeout: float = 30.0) -> dict:
    """Wait for the attempt's final report (its logs count as shipped)."""
    def done():
        job = rt.job(attempt)
        for stream in ("stdout", "stderr"):
            rt.advance_offset(attempt, stream, logs.size(job.job_dir / f"{stream}.log"))
        return job.state == "done"
    until(rt, done, timeout, f"attempt {attempt} done")
    return [r for r in rt.report.of(attempt) if r["kind"] != "started"][-1]


def stdout(rt: Runtime, attempt: str) -> str:
    return (rt.job(attempt).job_dir / "stdout.log").read_text()


def processes_with(marker: str) -> list[int]:
    """Pids whose command line contains ``marker`` (from /proc, as the issue asks)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/cmdline", "rb") as fh:
                    if marker.encode() in fh.read().replace(b"\0", b" "):
                        out.append(int(name))
            except OSError:
                continue
    return out


def cgroup_of(rt: Runtime, attempt: str) -> JobCgroup:
    cg = rt.sandbox.cgroup_for(attempt)
    assert cg is not None
    return cg
