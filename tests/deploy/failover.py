"""A loopback TCP proxy that stands in for the Kubernetes Service in front of the replicas.

Each connection goes to the first backend that accepts it, as a Service sends traffic only to
ready endpoints: once a replica dies, new connections reach the other one.
"""

from __future__ import annotations

import socket
import threading

from tests.support.server import free_port


class FailoverProxy:
    def __init__(self, backends: list[int]) -> None:
        self.backends = backends
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._listener = socket.create_server(("127.0.0.1", self.port))
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="failover-proxy", daemon=True)
        self._thread.start()

    def _connect(self) -> socket.socket | None:
        for port in self.backends:
            try:
                return socket.create_connection(("127.0.0.1", port), timeout=2)
            except OSError:
                continue
        return None

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            upstream = self._connect()
            if upstream is None:
                client.close()
                continue
            upstream.settimeout(None)
            for src, dst in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(src, dst), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()

    def stop(self) -> None:
        self._stopping.set()
        self._listener.close()
