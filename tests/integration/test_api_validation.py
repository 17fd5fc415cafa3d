"""Bad input on every write endpoint: problem+json naming the field (422), 404 or 409 — never a
500 — and nothing half-written."""

from __future__ import annotations

import pytest

from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

server = server_fixture()
PROBLEM = "application/problem+json"
GOOD = {"name": "ok", "command": ["true"], "resources": {"gpu": 8}}


def _state(c) -> dict:  # noqa: ANN001
    return {"jobs": len(c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]),
            "teams": len(c.get("/api/v1/teams").json()["items"]),
            "queues": c.get("/api/v1/queues").json()["items"],
            "users": len(c.get("/api/v1/users").json()["items"]),
            "tokens": len(c.get("/api/v1/tokens").json()["items"]),
            "nodes": c.get("/api/v1/nodes").json()["items"]}


def _check(r, status: int, field: str | None = None) -> None:  # noqa: ANN001
    assert r.status_code == status, (r.request.method, r.request.url, r.status_code, r.text)
    assert r.headers["content-type"].startswith(PROBLEM)
    body = r.json()
    assert body["status"] == status and body["title"] and body["detail"]
    assert "Traceback" not in r.text
    if field is not None:
        fields = [e["field"] for e in body.get("errors", [])]
        assert field in fields, (field, body)


JOB_CASES = [
    (b"{not json", 422, "body"),
    (b"[1, 2]", 422, "body"),
    (b'"a string"', 422, "body"),
    (b"{}", 422, "name"),
    (b'{"name": "x"}', 422, "command"),
    (b'{"name": "x", "command": []}', 422, "command"),
    (b'{"name": "bad name!", "command": ["a"]}', 422, "name"),
    (b'{"name": "x", "command": ["a"], "resources": {"gpu": "lots"}}', 422, "resources.gpu"),
    (b'{"name": "x", "command": ["a"], "resources": {"gpu": -1}}', 422, "resources.gpu"),
    (b'{"name": "x", "command": ["a"], "resources": {"gpu": 1.5}}', 422, "resources.gpu"),
    (b'{"name": "x", "command": ["a"], "resources": {"gpu": 1e308}}', 422, "resources.gpu"),
    (b'{"name": "x", "command": ["a"], "resources": {"memory_mib": 100000000000000000000000}}', 422,
     "resources.memory_mib"),
    (b'{"name": "x", "command": ["a"], "resources": {"nodes": 0}}', 422, "resources.nodes"),
    (b'{"name": "x", "command": ["a"], "priority": "urgent"}', 422, "priority"),
    (b'{"name": "x", "command": ["a"], "priority": 99999999999}', 422, "priority"),
    (b'{"name": "x", "command": ["a"], "bogus": 1}', 422, "bogus"),
    (b'{"name": "x", "command": ["a"], "kind": "nonsense"}', 422, None),
    (b'{"name": "x", "command": ["a"], "queue": "missing"}', 422, "queue"),
    (b'{"name": "x", "command": ["a"], "team": "missing"}', 422, "team"),
    (b'{"name": "x", "command": ["a"], "team": 5}', 422, "team"),
    (b'{"name": "x", "command": ["a"], "retry": {"max_attempts": 0}}', 422, "retry.max_attempts"),
]


@pytest.mark.parametrize(("raw", "status", "field"), JOB_CASES)
def test_bad_job_specs(server, raw: bytes, status: int, field: str | None) -> None:  # noqa: ANN001
    with server.client() as c:
        before = _state(c)
        r = c.post("/api/v1/jobs", content=raw, headers={"content-type": "application/json"})
        _check(r, status, field)
        assert _state(c) == before


def test_bad_idempotency_key_and_job_ids(server) -> None:  # noqa: ANN001
    with server.client() as c:
        before = _state(c)
        _check(c.post("/api/v1/jobs", json=GOOD, headers={"Idempotency-Key": "k" * 300}), 422,
               "Idempotency-Key")
        for bad in ("abc", "0", "-1", "99999999999999999999999", "123456789"):
            _check(c.post(f"/api/v1/jobs/{bad}/cancel"), 404)
            _check(c.get(f"/api/v1/jobs/{bad}"), 404)
        _check(c.get("/api/v1/jobs/1/logs", params={"tail": -1}), 422, "tail")
        _check(c.get("/api/v1/nope"), 404)
        assert _state(c) == before


def test_bad_admin_writes(server) -> None:  # noqa: ANN001
    with server.client() as c:
        before = _state(c)
        _check(c.post("/api/v1/teams", json={}), 422, "name")
        _check(c.post("/api/v1/teams", json={"name": "no spaces"}), 422, "name")
        _check(c.post("/api/v1/teams", json=["x"]), 422, "body")
        _check(c.post("/api/v1/teams", content=b"{", headers={"content-type": "application/json"}), 422, "body")
        _check(c.post("/api/v1/teams", json={"name": "default"}), 409)
        _check(c.post("/api/v1/queues", json={"name": "q"}), 422, "team")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "missing"}), 422, "team")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "default", "guarantee_milli": "x"}),
               422, "guarantee_milli")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "default", "guarantee_milli": -1}),
               422, "guarantee_milli")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "default", "limit_milli": 10**30}),
               422, "limit_milli")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "default", "guarantee_milli": 5000,
                                              "limit_milli": 1000}), 422, "limit_milli")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "default", "weight": 0}), 422, "weight")
        _check(c.post("/api/v1/queues", json={"name": "q", "team": "default", "colour": "red"}), 422, "colour")
        _check(c.post("/api/v1/queues", json={"name": "default", "team": "default"}), 409)
        _check(c.patch("/api/v1/queues/missing", json={"weight": 2}), 404)
        _check(c.patch("/api/v1/queues/default", json={"weight": "heavy"}), 422, "weight")
        _check(c.patch("/api/v1/queues/default", json={"limit_milli": -5}), 422, "limit_milli")
        _check(c.delete("/api/v1/queues/missing"), 404)
        _check(c.post("/api/v1/users", json={"name": "u1", "team": "default", "role": "god"}), 422, "role")
        _check(c.post("/api/v1/users", json={"name": "u1", "team": "missing"}), 422, "team")
        _check(c.post("/api/v1/users", json={"name": "admin", "team": "default"}), 409)
        _check(c.post("/api/v1/tokens", json={"user": "nobody"}), 422, "user")
        _check(c.post("/api/v1/tokens", json={"user": "admin", "name": 5}), 422, "name")
        _check(c.delete("/api/v1/tokens/xyz"), 404)
        _check(c.post("/api/v1/nodes/missing/cordon"), 404)
        _check(c.post("/api/v1/nodes/missing/drain"), 404)
        _check(c.post("/api/v1/nodes/missing/uncordon"), 404)
        _check(c.get("/api/v1/events", params={"limit": 10**9}), 422, "limit")
        assert _state(c) == before


def test_queue_with_active_jobs_cannot_be_deleted(server) -> None:  # noqa: ANN001
    with server.client() as c:
        assert c.post("/api/v1/queues", json={"name": "busy", "team": "default"}).status_code == 201
        job = c.post("/api/v1/jobs", json={**GOOD, "queue": "busy"}).json()
        _check(c.delete("/api/v1/queues/busy"), 409)
        c.post(f"/api/v1/jobs/{job['id']}/cancel")
        _check(c.delete("/api/v1/queues/busy"), 409)  # history keeps it
        assert c.post("/api/v1/queues", json={"name": "empty", "team": "default"}).status_code == 201
        assert c.delete("/api/v1/queues/empty").status_code == 200
        upd = c.patch("/api/v1/queues/busy", json={"guarantee_milli": 2000, "weight": 2.5})
        assert upd.status_code == 200 and upd.json()["guarantee_milli"] == 2000


def test_bad_agent_messages(server) -> None:  # noqa: ANN001
    agent = FakeAgent(server.url, server.bootstrap_token, "val-node", gpus=1)
    boot = {"Authorization": f"Bearer {server.bootstrap_token}"}
    with server.client() as c:
        before = _state(c)
        h = boot
        _check(c.post("/api/v1/agent/register", json={}, headers=h), 422, "node")
        _check(c.post("/api/v1/agent/register", json={"node": {"hostname": "x", "cpu_milli": "many",
               "memory_mib": 1}, "accelerators": []}, headers=h), 422, "node.cpu_milli")
        _check(c.post("/api/v1/agent/register", json={"protocol": 99, "node": {"hostname": "x",
               "cpu_milli": 1, "memory_mib": 1}, "accelerators": []}, headers=h), 422, "protocol")
        _check(c.post("/api/v1/agent/register", json={"node": {"hostname": "x", "cpu_milli": 1,
               "memory_mib": 1}, "accelerators": [{"uuid": "u", "index": 0, "model": "m",
                                                   "memory_mib": -5}]}, headers=h), 422,
               "accelerators.0.memory_mib")
        assert _state(c) == before
    agent.register()
    n = agent.http
    _check(n.post("/api/v1/agent/heartbeat", json={"node_id": agent.node_id}), 422, "ts")
    _check(n.post("/api/v1/agent/heartbeat", content=b"{", headers={"content-type": "application/json"}),
           422, "body")
    _check(n.post("/api/v1/agent/status", json={"node_id": agent.node_id, "reports": [
        {"seq": 1, "job_id": "1", "attempt_id": "1", "kind": "exploded", "ts": 0}]}), 422,
        "reports.0.kind")
    _check(n.post("/api/v1/agent/logs", json={"node_id": agent.node_id, "chunks": [{"job_id": "1"}]}),
           422, "chunks.0.attempt_id")
    _check(n.get("/api/v1/agent/assignments", params={"wait": -1}), 422, "wait")
    # ids on the wire are the server's canonical decimal ids; anything else is refused
    _check(n.post("/api/v1/agent/status", json={"node_id": agent.node_id, "reports": [
        {"seq": 5, "job_id": "junk", "attempt_id": "999", "kind": "exited", "ts": 0}]}), 422,
        "reports.0.job_id")
    # reports about jobs this node does not run are accepted as no-ops, not errors
    ok = n.post("/api/v1/agent/status", json={"node_id": agent.node_id, "reports": [
        {"seq": 5, "job_id": "987654321", "attempt_id": "999", "kind": "exited", "ts": 0}]})
    assert ok.status_code == 200 and ok.json() == {"accepted": 0}
    agent.close()
