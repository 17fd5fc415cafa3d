"""Helpers for the end-to-end tests: wait_for, screenshots, and an agent process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from tests.support.server import free_port
from tests.support.waiting import wait_until as wait_for

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"


class Agent:
    """``python -m agent`` on simulated GPUs, exporter on a free port."""

    def __init__(self, server, name: str, gpus: str, tmp: Path) -> None:  # noqa: ANN001
        self.name, self.port = name, free_port()
        self.log_path = tmp / f"agent-{name}.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        cmd = [sys.executable, "-m", "agent", "--server", server.url, "--token", server.bootstrap_token,
               "--node-name", name, "--simulate", gpus, "--state-dir", str(tmp / f"state-{name}"),
               "--exporter-port", str(self.port), "--heartbeat-interval", "0.5", "--poll-wait", "2",
               "--tick", "0.2", "--log-level", "INFO"]
        self.proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=open(self.log_path, "ab"),  # noqa: SIM115
                                     stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def exporter(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_registered(self, timeout: float = 30) -> None:
        def ok():  # noqa: ANN202
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-3000:]
            try:
                return httpx.get(f"http://{self.exporter}/healthz", timeout=2).json().get("registered")
            except (httpx.HTTPError, ValueError):
                return None
        wait_for(ok, timeout, f"agent {self.name} registered")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)


def shot(page, name: str) -> Path:  # noqa: ANN001
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"dashboard-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
