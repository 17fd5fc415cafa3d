"""One job member's process: launched through the shim, signalled as a whole, adoptable.

``launch`` writes the shim's plan (``launch.json``: argv, cwd, uid/gid, cgroup, log cap; no
environment: that goes to the shim's own environ, readable by root only) and starts the shim in
its own session. The member is the shim's child: a session leader in its own cgroup when the
sandbox is on. ``signal`` reaches every process of the member: through its cgroup (SIGKILL
freezes and kills the whole tree), else its process group and session; a container without a
cgroup of ours is signalled through its runtime. ``adopt`` re-attaches after an agent restart
using pid + start time, so a recycled pid is never mistaken for the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agent import procfs
from agent.runtime.container import ContainerRuntime, kill_container
from agent.sandbox.cgroups import JobCgroup
from agent.state import read_json, write_json_atomic

SHIM = str(Path(__file__).with_name("shim.py"))


class JobProcess:
    def __init__(self, pid: int, start_ticks: int | None, job_dir: Path,
                 popen: subprocess.Popen | None = None, *, cgroup: JobCgroup | None = None,
                 container: tuple[ContainerRuntime, str] | None = None) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self.job_dir = job_dir
        self._popen = popen
        self.cgroup = cgroup
        self.container = container

    @classmethod
    def launch(cls, plan: dict, env: dict[str, str], job_dir: Path, *, cgroup: JobCgroup | None = None,
               container: tuple[ContainerRuntime, str] | None = None) -> "JobProcess":
        """Start the shim for ``plan``; raises OSError when it cannot start."""
        for name in ("exit.json", "child.json"):
            (job_dir / name).unlink(missing_ok=True)
        write_json_atomic(job_dir / "launch.json", plan)
        os.chmod(job_dir / "launch.json", 0o600)
        with open(job_dir / "shim.log", "ab") as out:
            popen = subprocess.Popen(
                [sys.executable, "-E", "-s", SHIM, str(job_dir)],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out, cwd=job_dir, env=env,
                start_new_session=True, close_fds=True)
        st = procfs.read_stat(popen.pid)
        return cls(popen.pid, st.start_ticks if st else None, job_dir, popen, cgroup=cgroup,
                   container=container)

    @classmethod
    def adopt(cls, pid: int, start_ticks: int | None, job_dir: Path, *, cgroup: JobCgroup | None = None,
              container: tuple[ContainerRuntime, str] | None = None) -> "JobProcess":
        return cls(pid, start_ticks, job_dir, cgroup=cgroup, container=container)

    @property
    def adopted(self) -> bool:
        return self._popen is None

    def running(self) -> bool:
        if self._popen is not None:
            return self._popen.poll() is None
        return procfs.is_alive(self.pid, self.start_ticks)

    def child_pid(self) -> int | None:
        data = read_json(self.job_dir / "child.json")
        return int(data["pid"]) if isinstance(data, dict) and "pid" in data else None

    def pids(self) -> set[int]:
        """The shim, the member and (with a cgroup) every process in the member's cgroup."""
        out = {self.pid}
        child = self.child_pid()
        if child is not None:
            out.add(child)
        if self.cgroup is not None:
            out |= self.cgroup.pids()
        return out

    def exit_info(self) -> dict | None:
        """What the shim recorded about the exit (None if it was killed before it could)."""
        data = read_json(self.job_dir / "exit.json")
        return data if isinstance(data, dict) else None

    def shim_returncode(self) -> int | None:
        return self._popen.returncode if self._popen is not None else None

    def signal(self, sig: int) -> None:
        """Signal the whole member: SIGTERM to each of its processes (a container: to its init,
        which forwards it, as ``podman stop`` does), SIGKILL to all of them."""
        if self.container is not None and (sig != signal.SIGKILL or self.cgroup is None):
            kill_container(self.container[0], self.container[1], signal.Signals(sig).name.removeprefix("SIG"))
        if self.cgroup is not None:
            if sig == signal.SIGKILL:
                self.cgroup.kill()
            elif self.container is None:
                self.cgroup.signal(sig)
            return
        if self.container is not None:
            return
        child = self.child_pid()
        if child is None or not self.running():
            return
        try:
            os.killpg(child, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if sig == signal.SIGKILL:
            for pid in procfs.descendants({child: "job"}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
