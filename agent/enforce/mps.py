"""MPS daemon control: managed (the agent runs nvidia-cuda-mps-control), external, or off.

Managed mode starts a daemon with its pipe and log directories under the agent's state dir and
stops it with ``quit``. It never changes compute mode or MIG. When the binary is missing the
mode degrades to "unavailable" with the reason, which jobs see in their enforcement report.

With the sandbox on, jobs run as their team's uid, and an MPS control daemon serves one uid at
a time (a client of another uid waits until the running server is idle). So the agent runs one
daemon per (uid, accelerator): as that uid, with ``CUDA_VISIBLE_DEVICES`` = the accelerator, its
pipe directory owned by the uid (mode 0700) under ``shared_dir``. Teams on one GPU then each
get their own MPS server (the servers time-slice), a client can only reach its own GPU through
its server, and another uid cannot connect to the pipe at all.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from agent.enforce.env import MpsSettings

log = logging.getLogger("gpupool.agent.mps")
MPS_BINARY = "nvidia-cuda-mps-control"
MODES = ("managed", "external", "off")


@dataclass(frozen=True, slots=True)
class _Daemon:
    root: Path
    uid: int | None = None
    gid: int | None = None
    visible: str | None = None  # the one accelerator this daemon's servers see

    @property
    def pipe_dir(self) -> Path:
        return self.root / "pipe"

    @property
    def log_dir(self) -> Path:
        return self.root / "log"


class MpsController:
    """Owns the MPS daemons for ``managed`` mode; answers the MpsSettings jobs are started with."""

    def __init__(self, mode: str, state_dir: Path, *, binary: str = MPS_BINARY,
                 applicable: bool = True, reason_off: str = "", shared_dir: Path | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mps mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode if applicable else "off"
        self.reason_off = reason_off
        self.default = _Daemon(state_dir / "mps")
        self.shared_dir = shared_dir
        self.pipe_dir, self.log_dir = self.default.pipe_dir, self.default.log_dir
        self.binary = shutil.which(binary) or (binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else None)
        self._started: set[_Daemon] = set()
        self._error = ""

    def _env(self, d: _Daemon) -> dict[str, str]:
        env = {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(d.pipe_dir), "CUDA_MPS_LOG_DIRECTORY": str(d.log_dir)}
        if d.visible:
            env["CUDA_VISIBLE_DEVICES"] = d.visible
        return env

    def daemon_running(self, d: _Daemon | None = None) -> bool:
        """True when the daemon answers on its pipe directory (it survives agent restarts)."""
        d = d or self.default
        return (d.pipe_dir / "control").exists() and self._control("get_server_list", d) is not None

    def _control(self, command: str, d: _Daemon) -> str | None:
        if not self.binary:
            return None
        try:
            res = subprocess.run([self.binary], input=command + "\n", env=self._env(d),
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._error = f"{MPS_BINARY} {command}: {exc}"
            return None
        if res.returncode != 0:
            self._error = f"{MPS_BINARY} {command} exited {res.returncode}: {res.stderr.strip()[:200]}"
            return None
        return res.stdout

    def _prepare(self, d: _Daemon) -> None:
        for path in (d.root, d.pipe_dir, d.log_dir):
            path.mkdir(parents=True, exist_ok=True, mode=0o700)
            if d.uid is not None:
                os.chown(path, d.uid, d.gid)
                os.chmod(path, 0o700)

    def ensure_started(self, d: _Daemon | None = None) -> bool:
        """Start the managed daemon if it is not running; True when MPS is usable."""
        d = d or self.default
        if self.mode != "managed":
            return self.mode == "external"
        if not self.binary:
            self._error = f"{MPS_BINARY} not found on PATH"
            return False
        if d in self._started or self.daemon_running(d):
            self._started.add(d)
            return True
        self._prepare(d)
        as_user = {"user": d.uid, "group": d.gid, "extra_groups": []} if d.uid is not None else {}
        try:
            res = subprocess.run([self.binary, "-d"], env=self._env(d), capture_output=True,
                                 text=True, timeout=10, **as_user)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._error = f"could not start {MPS_BINARY} -d: {exc}"
            log.error("%s", self._error)
            return False
        if res.returncode != 0:
            self._error = f"{MPS_BINARY} -d exited {res.returncode}: {res.stderr.strip()[:200]}"
            log.error("%s", self._error)
            return False
        log.info("started MPS control daemon (pipe dir %s%s)", d.pipe_dir,
                 f", uid {d.uid}, accelerator {d.visible}" if d.uid is not None else "")
        self._started.add(d)
        return True

    def _quit(self, d: _Daemon) -> None:
        if d in self._started or (d.pipe_dir / "control").exists():
            self._control("quit", d)
            log.info("stopped MPS control daemon (pipe dir %s)", d.pipe_dir)
        self._started.discard(d)

    def stop(self) -> None:
        """Quit every managed daemon (only ours: each is addressed by its own pipe directory)."""
        if self.mode != "managed" or not self.binary:
            return
        daemons = set(self._started) | {self.default}
        if self.shared_dir is not None and self.shared_dir.is_dir():
            daemons |= {_Daemon(p) for p in self.shared_dir.iterdir() if (p / "pipe" / "control").exists()}
        for d in daemons:
            self._quit(d)

    def _daemon_for(self, uid: int | None, gid: int | None, uuid: str | None) -> _Daemon:
        if uid is None or self.shared_dir is None or not uuid:
            return self.default
        return _Daemon(self.shared_dir / f"{uid}-{uuid}", uid, gid, uuid)

    def release(self, uid: int | None, gid: int | None, uuid: str | None) -> None:
        """A (uid, accelerator) has no job left: quit its daemon (the shared default stays)."""
        d = self._daemon_for(uid, gid, uuid)
        if self.mode == "managed" and self.binary and d is not self.default:
            self._quit(d)

    def settings(self, uid: int | None = None, gid: int | None = None, uuid: str | None = None) -> MpsSettings:
        """What a job started now gets (starts the managed daemon for its uid/accelerator first)."""
        if self.mode == "off":
            return MpsSettings(mode="off", detail=self.reason_off)
        if self.mode == "external":
            pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")
            logd = os.environ.get("CUDA_MPS_LOG_DIRECTORY")
            return MpsSettings(mode="external", available=True, pipe_dir=pipe, log_dir=logd)
        d = self._daemon_for(uid, gid, uuid)
        ok = self.ensure_started(d)
        return MpsSettings(mode="managed", available=ok, pipe_dir=str(d.pipe_dir),
                           log_dir=str(d.log_dir), detail="" if ok else self._error)
