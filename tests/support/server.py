"""Start a real gpupool server process on a free loopback port, for integration tests.

    from tests.support.server import start_server
    with start_server(db_url) as srv:          # or srv = start_server(...); srv.stop()
        httpx.get(f"{srv.url}/api/v1/whoami", headers={"Authorization": f"Bearer {srv.admin_token}"})

The server is readiness-waited (GET /readyz); its output goes to ``srv.log_path``. Agents
register with ``srv.bootstrap_token``. Pass ``env={"GPUPOOL_HEARTBEAT_TIMEOUT_S": "2"}`` etc.
With ``GPUPOOL_TLS_CERT``/``GPUPOOL_TLS_KEY`` in env the URL is https and ``ca_bundle`` is trusted.
"""

from __future__ import annotations

import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from controlplane.core.tls import verify_with
from tests.support.openapi_check import conformance_hooks

REPO = Path(__file__).resolve().parents[2]

TEST_DEFAULTS = {
    "GPUPOOL_SCHEDULER_INTERVAL_S": "0.2",
    "GPUPOOL_LIVENESS_INTERVAL_S": "0.5",
    "GPUPOOL_SCHEDULER_LEASE_S": "3",
    "GPUPOOL_HEARTBEAT_TIMEOUT_S": "10",
    "GPUPOOL_ASSIGNMENT_POLL_S": "0.1",
    "GPUPOOL_LOG_LEVEL": "warning",
}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class ServerHandle:
    url: str
    admin_token: str
    bootstrap_token: str
    process: subprocess.Popen
    log_path: Path
    home: Path
    db_url: str
    env: dict = field(default_factory=dict)
    ca_bundle: str | None = None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def headers(self, token: str | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token or self.admin_token}"}

    def client(self, token: str | None = None, timeout: float = 30.0) -> httpx.Client:
        """An HTTP client whose every response is checked against the server's OpenAPI document."""
        return httpx.Client(base_url=self.url, headers=self.headers(token), timeout=timeout,
                            verify=verify_with(self.ca_bundle),
                            event_hooks=conformance_hooks(self.url, verify_with(self.ca_bundle)))

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=5)

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_server(db_url: str, env: dict[str, str] | None = None, *, port: int | None = None,
                 home: Path | None = None, admin_token: str | None = None,
                 bootstrap_token: str | None = None, timeout: float = 30.0,
                 log_path: Path | None = None, ca_bundle: str | None = None) -> ServerHandle:
    """Run ``python -m controlplane.server`` on 127.0.0.1 and wait until /readyz answers 200."""
    port = port or free_port()
    home = Path(home or tempfile.mkdtemp(prefix="gpupool-home-"))
    home.mkdir(parents=True, exist_ok=True)
    admin_token = admin_token or f"gpa_test_{secrets.token_urlsafe(16)}"
    bootstrap_token = bootstrap_token or f"gpb_test_{secrets.token_urlsafe(16)}"
    log_path = Path(log_path or home / f"server-{port}.log")
    # a rendezvous port window of its own: other servers and jobs on this machine use 29500...
    ports = random.randrange(10000, 29000, 500)  # below the ephemeral range (32768+)
    full_env = {**os.environ, **TEST_DEFAULTS, "GPUPOOL_HOME": str(home),
                "GPUPOOL_MASTER_PORT_MIN": str(ports), "GPUPOOL_MASTER_PORT_MAX": str(ports + 499),
                "GPUPOOL_DATABASE_URL": db_url, "GPUPOOL_ADMIN_TOKEN": admin_token,
                "GPUPOOL_BOOTSTRAP_TOKEN": bootstrap_token, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    log_file = open(log_path, "ab")  # noqa: SIM115 - the child writes to it
    proc = subprocess.Popen([sys.executable, "-m", "controlplane.server", "--host", "127.0.0.1",
                             "--port", str(port)], env=full_env, cwd=str(REPO), stdout=log_file,
                            stderr=subprocess.STDOUT, start_new_session=True)
    log_file.close()
    scheme = "https" if full_env.get("GPUPOOL_TLS_CERT") else "http"
    handle = ServerHandle(url=f"{scheme}://127.0.0.1:{port}", admin_token=admin_token,
                          bootstrap_token=bootstrap_token, process=proc, log_path=log_path,
                          home=home, db_url=db_url, env=env or {}, ca_bundle=ca_bundle)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gpupool server exited with {proc.returncode}:\n{handle.log_text()[-3000:]}")
        try:
            if httpx.get(f"{handle.url}/readyz", timeout=1.0,
                         verify=verify_with(ca_bundle)).status_code == 200:
                return handle
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    handle.kill()
    raise RuntimeError(f"gpupool server not ready after {timeout}s:\n{handle.log_text()[-3000:]}")
