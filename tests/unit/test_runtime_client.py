"""Agent HTTP client against a real loopback server: answers and errors map to what the loop does."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from agent.client import AgentClient, NotAuthorized, Rejected, ServerUnreachable
from agent.runtime.ports import free_ports
from controlplane.core import wire

ANSWERS = {  # path -> (status, body)
    "/api/v1/agent/heartbeat": (200, {"ok": True, "heartbeat_interval_s": 2.0}),
    "/api/v1/agent/status": (401, {"title": "Unauthorized", "detail": "unknown token"}),
    "/api/v1/agent/logs": (422, {"title": "Invalid", "detail": "chunks.0.offset: must be >= 0"}),
    "/api/v1/agent/assignments": (503, {"title": "Unavailable", "detail": "database down"}),
}


class Handler(BaseHTTPRequestHandler):
    seen: list = []

    def _answer(self) -> None:
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        self.seen.append((self.command, self.path, self.headers.get("Authorization"),
                          self.rfile.read(length) if length else b""))
        status, body = ANSWERS.get(path, (404, {"detail": "no"}))
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = _answer

    def log_message(self, *a) -> None:
        pass


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    Handler.seen = []
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def test_answers_and_error_classes(server):
    c = AgentClient(server, token="node-tok")
    res = c.heartbeat(wire.Heartbeat(node_id="1", ts=1.0))
    assert res.heartbeat_interval_s == 2.0
    method, path, auth, body = Handler.seen[-1]
    assert (method, path, auth) == ("POST", "/api/v1/agent/heartbeat", "Bearer node-tok")
    assert json.loads(body)["node_id"] == "1"
    with pytest.raises(NotAuthorized, match="unknown token"):
        c.status(wire.StatusBatch(node_id="1", reports=[]))
    with pytest.raises(Rejected, match="offset"):
        c.logs(wire.LogBatch(node_id="1", chunks=[]))
    with pytest.raises(ServerUnreachable, match="database down"):
        c.assignments(0.1, 3)
    assert Handler.seen[-1][1] == "/api/v1/agent/assignments?wait=0.1&epoch=3"


def test_connection_refused_is_unreachable():
    port = free_ports(1)[0]
    with pytest.raises(ServerUnreachable):
        AgentClient(f"http://127.0.0.1:{port}", timeout=2).heartbeat(wire.Heartbeat(node_id="1", ts=1.0))
