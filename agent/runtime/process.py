"""One job process: launched through the shim in its own session, signalled as a group, adoptable.

``launch`` starts ``shim.py`` as session leader (pgid = its pid) with stdout/stderr going to the
job's log files; the shim runs the real command. ``adopt`` re-attaches to a running shim after an
agent restart using pid + start time, so a recycled pid is never mistaken for the job.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from agent import procfs
from agent.state import read_json

SHIM = str(Path(__file__).with_name("shim.py"))


class JobProcess:
    def __init__(self, pid: int, start_ticks: int | None, job_dir: Path,
                 popen: subprocess.Popen | None = None) -> None:
        self.pid = pid
        self.start_ticks = start_ticks
        self.job_dir = job_dir
        self._popen = popen

    @classmethod
    def launch(cls, argv: list[str], env: dict[str, str], cwd: str, job_dir: Path) -> "JobProcess":
        """Start ``argv`` under the shim; raises OSError when it cannot start."""
        (job_dir / "exit.json").unlink(missing_ok=True)
        (job_dir / "child.json").unlink(missing_ok=True)
        with open(job_dir / "stdout.log", "ab") as out, open(job_dir / "stderr.log", "ab") as err:
            popen = subprocess.Popen(
                [sys.executable, "-I", SHIM, str(job_dir), *argv],
                stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, env=env,
                start_new_session=True, close_fds=True)
        st = procfs.read_stat(popen.pid)
        return cls(popen.pid, st.start_ticks if st else None, job_dir, popen)

    @classmethod
    def adopt(cls, pid: int, start_ticks: int | None, job_dir: Path) -> "JobProcess":
        return cls(pid, start_ticks, job_dir)

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

    def exit_info(self) -> dict | None:
        """What the shim recorded about the exit (None if it was killed before it could)."""
        data = read_json(self.job_dir / "exit.json")
        return data if isinstance(data, dict) else None

    def shim_returncode(self) -> int | None:
        return self._popen.returncode if self._popen is not None else None

    def signal(self, sig: int) -> None:
        """Signal the whole job: its process group, and on SIGKILL every process of its session."""
        if not self.running():
            return
        try:
            os.killpg(self.pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
        if sig == signal.SIGKILL:
            for pid in procfs.descendants({self.pid: "job"}):
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
