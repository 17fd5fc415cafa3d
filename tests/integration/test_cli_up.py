"""`gpupool up`: starts server + agent, writes the config, prints the admin token once, stops cleanly."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from controlplane.client import GpupoolClient

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.timeout(180)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_up(home: Path, port: int, log: Path) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
    env.update({"GPUPOOL_HOME": str(home), "COLUMNS": "200", "PYTHONUNBUFFERED": "1"})
    return subprocess.Popen([sys.executable, "-m", "controlplane.cli.main", "up", "--port", str(port),
                             "--simulate", "2x1xT4"], cwd=ROOT, env=env, stdout=open(log, "wb"),
                            stderr=subprocess.STDOUT, start_new_session=True)


def wait_up(proc: subprocess.Popen, log: Path, timeout: float = 90) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        assert proc.poll() is None, text
        if "gpupool is up" in text:
            return text
        time.sleep(0.3)
    raise AssertionError(log.read_text())


def stop(proc: subprocess.Popen) -> int:
    os.killpg(proc.pid, signal.SIGINT)
    return proc.wait(timeout=60)


def test_up_twice_in_one_home(tmp_path):
    home, port = tmp_path / "home", free_port()
    proc = start_up(home, port, tmp_path / "up1.log")
    try:
        text = wait_up(proc, tmp_path / "up1.log")
        config = yaml.safe_load((home / "config.yaml").read_text())
        assert config["server"] == f"http://127.0.0.1:{port}"
        token = config["token"]
        assert token in text  # printed once, on the first start
        with GpupoolClient(config["server"], token) as c:
            nodes = c.list_nodes()["items"]
            assert len(nodes) == 2 and {n["accelerators"][0]["model"] for n in nodes} == {"T4"}
        # the CLI finds server and token in $GPUPOOL_HOME/config.yaml
        env = {k: v for k, v in os.environ.items() if not k.startswith("GPUPOOL_")}
        env["GPUPOOL_HOME"] = str(home)
        out = subprocess.run([sys.executable, "-m", "controlplane.cli.main", "nodes"], env=env,
                             capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert out.returncode == 0 and "T4" in out.stdout
        # a second `up` on the same port says so in one line
        busy = subprocess.run([sys.executable, "-m", "controlplane.cli.main", "up", "--port", str(port)],
                              env=env, capture_output=True, text=True, timeout=60, cwd=ROOT)
        assert busy.returncode == 1 and "already in use" in busy.stderr and "Traceback" not in busy.stderr
    finally:
        assert stop(proc) == 0
    ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
    assert str(home / "agents") not in ps  # the agents were stopped with it

    proc = start_up(home, port, tmp_path / "up2.log")
    try:
        text = wait_up(proc, tmp_path / "up2.log")
        assert token not in text  # not shown again
        with GpupoolClient(f"http://127.0.0.1:{port}", token) as c:
            assert c.whoami()["role"] == "admin"
    finally:
        assert stop(proc) == 0
