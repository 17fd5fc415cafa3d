"""Containers for the deploy tests: the engine (podman with runc, or docker), cached image builds,
and containers that are always removed afterwards.

Without podman/docker the tests skip, unless GPUPOOL_REQUIRE_PODMAN=1 (CI): then they fail.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERSION = "0.1.0"
PREFIX = os.environ.get("IMAGE_PREFIX", "localhost/")
IMAGES = {
    "gpupool": f"{PREFIX}gpupool:{VERSION}",
    "agent-slim": f"{PREFIX}gpupool-agent:{VERSION}-slim",
    "agent": f"{PREFIX}gpupool-agent:{VERSION}",
    "workload": f"{PREFIX}gpupool-workload:{VERSION}",
}
# the engine's default ulimits exceed what this sandbox may set
ULIMITS = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
# The agent's Linux capabilities: the pool test runs agents with exactly these (all others
# dropped) and the Kubernetes DaemonSet grants the same set (the wiring test compares them).
AGENT_CAPABILITIES = ("CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETGID", "SETUID", "SYS_ADMIN")


def engine_command() -> list[str]:
    """podman (runc: crun fails on hybrid cgroup hosts) or docker; skip/fail when neither is here."""
    if shutil.which("podman"):
        return ["podman", "--runtime", "runc"]
    if shutil.which("docker") and subprocess.run(["docker", "info"], capture_output=True).returncode == 0:
        return ["docker"]
    why = "neither podman nor a running docker is installed (scripts/setup.sh installs podman)"
    if os.environ.get("GPUPOOL_REQUIRE_PODMAN") == "1":
        pytest.fail(f"{why} and GPUPOOL_REQUIRE_PODMAN=1")
    pytest.skip(why)


def build_images(*names: str) -> dict[str, str]:
    """Build (or reuse, when cached) the named images with deploy/images/build.sh; name -> tag."""
    engine = engine_command()
    env = {**os.environ, "CONTAINER_ENGINE": engine[0]}
    result = subprocess.run(["nice", "-n", "10", str(ROOT / "deploy/images/build.sh"), *names],
                            env=env, capture_output=True, text=True, timeout=1800)
    assert result.returncode == 0, f"image build failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return {n: IMAGES[n] for n in names}


@dataclass
class Containers:
    """Starts containers under unique names and removes every one of them in ``cleanup``."""

    engine: list[str]
    prefix: str = field(default_factory=lambda: f"gpupool-test-{uuid.uuid4().hex[:8]}")
    names: list[str] = field(default_factory=list)

    def cmd(self, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        result = subprocess.run([*self.engine, *args], capture_output=True, text=True, timeout=timeout)
        if check:
            assert result.returncode == 0, f"{' '.join(args[:3])}: {result.stderr or result.stdout}"
        return result

    def run(self, name: str, image: str, *args: str, env: dict[str, str] | None = None,
            options: tuple[str, ...] = ()) -> str:
        """Start a detached container on the host network; returns its full name."""
        full = f"{self.prefix}-{name}"
        self.names.append(full)
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        self.cmd("run", "-d", "--name", full, "--network", "host", *ULIMITS, *env_args, *options,
                 image, *args)
        return full

    def run_once(self, image: str, *args: str, env: dict[str, str] | None = None,
                 options: tuple[str, ...] = (), timeout: float = 120) -> subprocess.CompletedProcess:
        """Run a container to completion (removed afterwards); returns the finished process."""
        env_args = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
        return self.cmd("run", "--rm", "--network", "host", *ULIMITS, *env_args, *options, image,
                        *args, check=False, timeout=timeout)

    def logs(self, full: str) -> str:
        result = self.cmd("logs", full, check=False)
        return result.stdout + result.stderr

    def state(self, full: str) -> dict:
        result = self.cmd("inspect", "--format", "{{json .State}}", full, check=False)
        return json.loads(result.stdout) if result.returncode == 0 else {}

    def running(self, full: str) -> bool:
        return bool(self.state(full).get("Running"))

    def cleanup(self) -> None:
        for full in reversed(self.names):
            self.cmd("rm", "-f", "-t", "2", full, check=False)
