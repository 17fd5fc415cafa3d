"""MPS daemon control: managed (the agent runs nvidia-cuda-mps-control), external, or off.

Managed mode starts one daemon with its pipe and log directories under the agent's state dir and
stops it with ``quit``. It never changes compute mode or MIG. When the binary is missing the
mode degrades to "unavailable" with the reason, which jobs see in their enforcement report.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
from pathlib import Path

from agent.enforce.env import MpsSettings

log = logging.getLogger("gpupool.agent.mps")
MPS_BINARY = "nvidia-cuda-mps-control"
MODES = ("managed", "external", "off")


class MpsController:
    """Owns the MPS daemon for ``managed`` mode; answers the MpsSettings jobs are started with."""

    def __init__(self, mode: str, state_dir: Path, *, binary: str = MPS_BINARY,
                 applicable: bool = True, reason_off: str = "") -> None:
        if mode not in MODES:
            raise ValueError(f"mps mode must be one of {', '.join(MODES)}, not {mode!r}")
        self.mode = mode if applicable else "off"
        self.reason_off = reason_off
        self.pipe_dir = state_dir / "mps" / "pipe"
        self.log_dir = state_dir / "mps" / "log"
        self.binary = shutil.which(binary) or (binary if os.path.isabs(binary) and os.access(binary, os.X_OK) else None)
        self._started = False
        self._error = ""

    def _env(self) -> dict[str, str]:
        return {**os.environ, "CUDA_MPS_PIPE_DIRECTORY": str(self.pipe_dir),
                "CUDA_MPS_LOG_DIRECTORY": str(self.log_dir)}

    def daemon_running(self) -> bool:
        """True when our daemon answers on its pipe directory (it survives agent restarts)."""
        return (self.pipe_dir / "control").exists() and self._control("get_server_list") is not None

    def _control(self, command: str) -> str | None:
        if not self.binary:
            return None
        try:
            res = subprocess.run([self.binary], input=command + "\n", env=self._env(),
                                 capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._error = f"{MPS_BINARY} {command}: {exc}"
            return None
        if res.returncode != 0:
            self._error = f"{MPS_BINARY} {command} exited {res.returncode}: {res.stderr.strip()[:200]}"
            return None
        return res.stdout

    def ensure_started(self) -> bool:
        """Start the managed daemon if it is not running; True when MPS is usable."""
        if self.mode != "managed":
            return self.mode == "external"
        if not self.binary:
            self._error = f"{MPS_BINARY} not found on PATH"
            return False
        if self._started or self.daemon_running():
            self._started = True
            return True
        self.pipe_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        try:
            res = subprocess.run([self.binary, "-d"], env=self._env(), capture_output=True,
                                 text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            self._error = f"could not start {MPS_BINARY} -d: {exc}"
            log.error("%s", self._error)
            return False
        if res.returncode != 0:
            self._error = f"{MPS_BINARY} -d exited {res.returncode}: {res.stderr.strip()[:200]}"
            log.error("%s", self._error)
            return False
        log.info("started MPS control daemon (pipe dir %s)", self.pipe_dir)
        self._started = True
        return True

    def stop(self) -> None:
        """Quit the managed daemon (only ours: it is addressed by our pipe directory)."""
        if self.mode != "managed" or not self.binary:
            return
        if self._started or (self.pipe_dir / "control").exists():
            self._control("quit")
            log.info("stopped MPS control daemon")
        self._started = False

    def settings(self) -> MpsSettings:
        """What a job started now gets (starts the managed daemon on first use)."""
        if self.mode == "off":
            return MpsSettings(mode="off", detail=self.reason_off)
        if self.mode == "external":
            pipe = os.environ.get("CUDA_MPS_PIPE_DIRECTORY")
            logd = os.environ.get("CUDA_MPS_LOG_DIRECTORY")
            return MpsSettings(mode="external", available=True, pipe_dir=pipe, log_dir=logd)
        ok = self.ensure_started()
        return MpsSettings(mode="managed", available=ok, pipe_dir=str(self.pipe_dir),
                           log_dir=str(self.log_dir), detail="" if ok else self._error)
