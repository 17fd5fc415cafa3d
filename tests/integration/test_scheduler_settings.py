"""The placement policy and plugin weights set at run time by admins: validated (422 naming the
policy or plugin), audited, and used by the real scheduling loop from its next cycle (a real
server with fake agents, on SQLite and PostgreSQL); the CLI shows and sets them."""

from __future__ import annotations

import uuid

import pytest

from tests.support.cli import admin_cli
from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture
from tests.support.waiting import wait_until

pytestmark = pytest.mark.timeout(180)
server = server_fixture()


@pytest.fixture(scope="module")
def agents(server):  # noqa: ANN001, ANN201
    """Two nodes of one GPU each, of a model only this module's jobs ask for."""
    model = f"S-{uuid.uuid4().hex[:6]}"
    nodes = [FakeAgent(server.url, server.bootstrap_token, f"sched-{i}-{model.lower()}", gpus=1, model=model)
             for i in range(2)]
    for a in nodes:
        a.register()
    yield model, nodes
    for a in nodes:
        a.close()


def _place(server, agents, name: str, model: str) -> str:  # noqa: ANN001
    """Submit a quarter-GPU job and return the accelerator the scheduler gave it."""
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json={"name": name, "command": ["sleep", "60"],
                                               "resources": {"gpu": 0.25, "models": [model]}}).json()["id"]

        def placed():  # noqa: ANN202
            for a in agents:
                a.heartbeat()
            placement = c.get(f"/api/v1/jobs/{job_id}").json()["placement"]
            return placement and placement[0]["slices"][0]["accelerator_uuid"]
        return wait_until(placed, 30, f"job {name} placed")


def test_policy_changes_reach_the_scheduling_loop_within_a_cycle(server, agents) -> None:  # noqa: ANN001
    model, nodes = agents
    with server.client() as admin:
        shown = admin.get("/api/v1/scheduler").json()
        assert shown["source"] == "settings" and shown["policy"] == "gpupool" and shown["weights"] is None
        assert shown["effective_weights"] == shown["policies"]["gpupool"] and "fgd" in shown["plugins"]
        r = admin.put("/api/v1/scheduler", json={"policy": "spread"})
        assert r.status_code == 200 and r.json()["source"] == "admin" and r.json()["updated_by"] == "user:admin"
    a = _place(server, nodes, "spread-a", model)
    b = _place(server, nodes, "spread-b", model)
    assert a != b  # spread: the emptier node

    with server.client() as admin:
        r = admin.put("/api/v1/scheduler", json={"policy": "packed", "weights": {"binpack": 1000, "topology": 1}})
        assert r.status_code == 200 and r.json()["effective_weights"] == {"binpack": 1000, "topology": 1}
        events = admin.get("/api/v1/events", params={"limit": 50}).json()["items"]
        changes = [e for e in events if e["kind"] == "scheduler_settings_updated"]
        assert changes[0]["data"]["policy"] == "packed" and changes[0]["data"]["before"]["policy"] == "spread"
    c = _place(server, nodes, "packed-c", model)
    d = _place(server, nodes, "packed-d", model)
    assert c == d  # binpack: the fuller GPU (spread would have chosen the other node)

    with server.client() as admin:
        back = admin.delete("/api/v1/scheduler").json()
        assert back["source"] == "settings" and back["policy"] == "gpupool"
        assert "scheduler_settings_reset" in [e["kind"] for e in admin.get("/api/v1/events").json()["items"]]
        for j in admin.get("/api/v1/jobs", params={"status": "scheduled"}).json()["items"]:
            admin.post(f"/api/v1/jobs/{j['id']}/cancel")


@pytest.mark.parametrize(("body", "field", "words"), [
    ({"policy": "fastest"}, "policy", "unknown policy 'fastest'"),
    ({"policy": "mix", "weights": {"fgd": 1, "magic": 2}}, "weights", "magic"),
    ({"policy": "mix", "weights": {"fgd": -1}}, "weights.fgd", "greater than or equal to 0"),
    ({"policy": "mix", "weights": {"fgd": "x"}}, "weights.fgd", "number"),
    ({"policy": ""}, "policy", ""),
    ({"policy": "gpupool", "extra": 1}, "extra", ""),
])
def test_bad_settings_are_422_naming_the_policy_or_plugin(server, body: dict, field: str, words: str) -> None:  # noqa: ANN001
    with server.client() as admin:
        r = admin.put("/api/v1/scheduler", json=body)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"] == field and words in r.json()["detail"], r.json()
        assert admin.get("/api/v1/scheduler").json()["source"] == "settings"  # nothing stored


def test_only_admins_see_or_change_the_scheduler(server) -> None:  # noqa: ANN001
    team = f"s{uuid.uuid4().hex[:8]}"
    with server.client() as admin:
        admin.post("/api/v1/teams", json={"name": team})
        admin.post("/api/v1/users", json={"name": f"{team}-u", "team": team})
        token = admin.post("/api/v1/tokens", json={"user": f"{team}-u", "name": "t"}).json()["token"]
    with server.client(token) as member:
        assert member.get("/api/v1/scheduler").status_code == 403
        assert member.put("/api/v1/scheduler", json={"policy": "fgd"}).status_code == 403


def test_the_cli_shows_and_sets_the_policy(server, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    cli = admin_cli(server, monkeypatch, tmp_path)

    code, out, _ = cli("admin", "scheduler", "set", "fgd", "--weight", "fgd=900", "-w", "topology=2")
    assert code == 0 and "900" in out and "set by user:admin" in out
    code, out, _ = cli("admin", "scheduler", "show")
    assert code == 0 and "policy fgd" in out and "explicit weights" in out
    code, _, err = cli("admin", "scheduler", "set", "fgd", "--weight", "warp=1")
    assert code == 1 and "warp" in err and "Traceback" not in err
    code, _, err = cli("admin", "scheduler", "set", "fgd", "--weight", "fgd")
    assert code == 1 and "NAME=VALUE" in err
    code, out, _ = cli("admin", "scheduler", "reset")
    assert code == 0 and "from the server's settings" in out
