"""Auth matrix on a real server: admins, team members, agents, bootstrap tokens, no token."""

from __future__ import annotations

import httpx
import pytest

from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

server = server_fixture()


@pytest.fixture(scope="module")
def world(server):  # noqa: ANN001, ANN201
    """Teams a and b with one member each, a node agent, and one job per team."""
    with server.client() as admin:
        for team in ("team-a", "team-b"):
            assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
            assert admin.post("/api/v1/users", json={"name": f"{team}-user", "team": team}).status_code == 201
        tokens = {t: admin.post("/api/v1/tokens", json={"user": f"{t}-user", "name": "t"}).json()["token"]
                  for t in ("team-a", "team-b")}
    agent = FakeAgent(server.url, server.bootstrap_token, "auth-node", gpus=1)
    agent.register()
    jobs = {}
    for team, token in tokens.items():
        with server.client(token) as c:
            r = c.post("/api/v1/jobs", json={"name": f"{team}-job", "command": ["true"],
                                              "resources": {"gpu": 8}})  # never fits: stays pending
            assert r.status_code == 201, r.text
            jobs[team] = r.json()["id"]
    yield {"tokens": tokens, "agent": agent, "jobs": jobs}
    agent.close()


def test_no_token_is_401_everywhere(server) -> None:  # noqa: ANN001
    for method, path in [("GET", "/api/v1/jobs"), ("POST", "/api/v1/jobs"), ("GET", "/api/v1/nodes"),
                         ("GET", "/api/v1/whoami"), ("POST", "/api/v1/agent/heartbeat"),
                         ("GET", "/api/v1/agent/assignments"), ("POST", "/api/v1/teams")]:
        r = httpx.request(method, server.url + path, json={})
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["content-type"].startswith("application/problem+json")
    r = httpx.get(server.url + "/api/v1/jobs", headers={"Authorization": "Bearer nope"})
    assert r.status_code == 401 and "invalid" in r.json()["detail"]
    r = httpx.get(server.url + "/api/v1/jobs", headers={"Authorization": "Basic abc"})
    assert r.status_code == 401


def test_health_needs_no_token(server) -> None:  # noqa: ANN001
    assert httpx.get(server.url + "/healthz").json() == {"status": "ok"}
    assert httpx.get(server.url + "/readyz").json() == {"status": "ready"}
    assert httpx.get(server.url + "/docs").status_code == 200
    assert "/api/v1/jobs" in httpx.get(server.url + "/openapi.json").json()["paths"]


def test_member_sees_only_own_team(server, world) -> None:  # noqa: ANN001
    a, b = world["tokens"]["team-a"], world["tokens"]["team-b"]
    job_b = world["jobs"]["team-b"]
    with server.client(a) as c:
        assert c.get("/api/v1/whoami").json() == {"user": "team-a-user", "team": "team-a",
                                                  "role": "member", "node": None}
        assert c.get(f"/api/v1/jobs/{job_b}").status_code == 404
        assert c.post(f"/api/v1/jobs/{job_b}/cancel").status_code == 404
        assert c.get(f"/api/v1/jobs/{job_b}/events").status_code == 404
        assert c.get(f"/api/v1/jobs/{job_b}/logs").status_code == 404
        assert c.get("/api/v1/events", params={"job": job_b}).status_code == 404
        ids = {j["id"] for j in c.get("/api/v1/jobs").json()["items"]}
        assert ids == {world["jobs"]["team-a"]}
        assert {q["team"] for q in c.get("/api/v1/queues").json()["items"]} == {"team-a"}
        assert {e["object_id"] for e in c.get("/api/v1/events").json()["items"]
                if e["object_type"] == "job"} == {world["jobs"]["team-a"]}
        # members may read nodes and capacity
        assert c.get("/api/v1/nodes").status_code == 200
        assert c.get("/api/v1/capacity").status_code == 200
        # members may not administer
        for method, path, body in [("POST", "/api/v1/teams", {"name": "x"}),
                                   ("POST", "/api/v1/queues", {"name": "q", "team": "team-a"}),
                                   ("PATCH", "/api/v1/queues/default?team=team-a", {"weight": 2}),
                                   ("POST", "/api/v1/users", {"name": "u", "team": "team-a"}),
                                   ("GET", "/api/v1/users", None), ("GET", "/api/v1/tokens", None),
                                   ("POST", "/api/v1/tokens", {"user": "team-a-user"}),
                                   ("POST", "/api/v1/bootstrap-tokens", None),
                                   ("POST", "/api/v1/nodes/auth-node/cordon", None)]:
            r = c.request(method, path, json=body)
            assert r.status_code == 403, (method, path, r.text)
        # a member cannot submit into another team
        r = c.post("/api/v1/jobs", json={"name": "sneaky", "command": ["x"], "team": "team-b"})
        assert r.status_code == 422 and r.json()["errors"][0]["field"] == "team"
    with server.client(b) as c:
        assert c.get(f"/api/v1/jobs/{job_b}").json()["status"] == "pending"


def test_admin_sees_everything(server, world) -> None:  # noqa: ANN001
    with server.client() as c:
        ids = {j["id"] for j in c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]}
        assert set(world["jobs"].values()) <= ids
        teams = {t["name"] for t in c.get("/api/v1/teams").json()["items"]}
        assert {"default", "team-a", "team-b"} <= teams


def test_agent_token_is_403_on_user_and_admin_endpoints(server, world) -> None:  # noqa: ANN001
    agent = world["agent"]
    with server.client(agent.token) as c:
        for method, path in [("GET", "/api/v1/jobs"), ("POST", "/api/v1/teams"), ("GET", "/api/v1/users"),
                             ("POST", "/api/v1/nodes/auth-node/cordon"), ("GET", "/api/v1/nodes"),
                             ("POST", "/api/v1/bootstrap-tokens")]:
            r = c.request(method, path, json={"name": "x"})
            assert r.status_code == 403, (method, path, r.text)
        # may only report for its own node
        r = c.post("/api/v1/agent/heartbeat", json={"node_id": "999999", "ts": 0})
        assert r.status_code == 403
        assert agent.heartbeat().status_code == 200


def test_user_and_bootstrap_tokens_cannot_speak_agent_protocol(server, world) -> None:  # noqa: ANN001
    with server.client(world["tokens"]["team-a"]) as c:
        assert c.post("/api/v1/agent/heartbeat", json={"node_id": "1", "ts": 0}).status_code == 403
        assert c.post("/api/v1/agent/register", json={"node": {"hostname": "x", "cpu_milli": 1,
                      "memory_mib": 1}, "accelerators": []}).status_code == 403
    with server.client(server.bootstrap_token) as c:
        assert c.get("/api/v1/agent/assignments").status_code == 403
        assert c.get("/api/v1/jobs").status_code == 403


def test_revoked_token_stops_working(server) -> None:  # noqa: ANN001
    with server.client() as admin:
        created = admin.post("/api/v1/tokens", json={"user": "admin", "name": "temp"}).json()
        with server.client(created["token"]) as c:
            assert c.get("/api/v1/whoami").status_code == 200
        assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 200
        assert admin.delete(f"/api/v1/tokens/{created['id']}").status_code == 404
        with server.client(created["token"]) as c:
            assert c.get("/api/v1/whoami").status_code == 401
        listed = admin.get("/api/v1/tokens").json()["items"]
        assert created["id"] not in {t["id"] for t in listed}
        assert all("token" not in t and "hash" not in str(t) for t in listed)


def test_admin_created_bootstrap_token_registers_a_node(server) -> None:  # noqa: ANN001
    with server.client() as admin:
        token = admin.post("/api/v1/bootstrap-tokens").json()["token"]
    agent = FakeAgent(server.url, token, "boot-node", gpus=1)
    try:
        assert agent.register()["node_token"]
        assert agent.heartbeat().status_code == 200
    finally:
        agent.close()
