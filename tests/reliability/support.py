"""Fault injection for the reliability suite: a private PostgreSQL that tests may stop and start
(never the machine's own server), and a TCP proxy that can cut one agent off the network."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import threading
from pathlib import Path

import pytest

from tests.support.server import free_port


def _pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}")) or [shutil.which(name) or ""]
    return found[-1]


def _as_postgres(argv: list[str]) -> list[str]:
    """initdb and pg_ctl refuse to run as root: run them as the postgres user."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *argv]
    return argv


class PrivatePostgres:
    """A throwaway PostgreSQL cluster on a free port, with stop/start for outage tests."""

    def __init__(self) -> None:
        if not _pg_bin("initdb") or not _pg_bin("pg_ctl"):
            why = "PostgreSQL server binaries (initdb, pg_ctl) are not installed"
            if os.environ.get("GPUPOOL_REQUIRE_POSTGRES") == "1":
                pytest.fail(why)
            pytest.skip(why)
        self.root = Path(tempfile.mkdtemp(prefix="gpupool-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        os.chmod(self.root, 0o755)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(_as_postgres([_pg_bin("initdb"), "-D", str(self.data), "-U", "postgres",
                                     "--auth=trust", "-E", "UTF8"]), check=True, capture_output=True)
        self.start()
        subprocess.run(["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-c",
                        "CREATE DATABASE gpupool"], check=True, capture_output=True)

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/gpupool"

    def start(self) -> None:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                                     "-l", str(self.root / "server.log"), "-o",
                                     f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1",
                                     "start"]), check=True, capture_output=True)

    def stop(self) -> None:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-w", "-t", "60",
                                     "-m", "fast", "stop"]), check=True, capture_output=True)

    def destroy(self) -> None:
        subprocess.run(_as_postgres([_pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate",
                                     "stop"]), capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)


class CuttableProxy:
    """A TCP proxy on loopback: ``cut()`` drops every connection and refuses new ones until
    ``heal()`` (a network partition between one agent and the control plane)."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.open = threading.Event()
        self.open.set()
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if not self.open.is_set():
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while self.open.is_set():
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass

    def cut(self) -> None:
        self.open.clear()
        with self._lock:
            conns, self._conns = self._conns, []
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
                s.close()
            except OSError:
                pass

    def heal(self) -> None:
        self.open.set()

    def close(self) -> None:
        self.cut()
        self.listener.close()
