"""Queue policy and quotas set by admins through the API and the CLI: members' submits are held to
the policy, the per-model and GPU-memory quotas reach the scheduler's snapshot, bad values are a
422 naming the field (a real server on SQLite and PostgreSQL)."""

from __future__ import annotations

import time
import uuid

import pytest

from controlplane.core.snapshot import Queue
from controlplane.db.database import Database
from controlplane.services.scheduling import SchedulingService
from tests.support.cli import admin_cli
from tests.support.fixtures import server_fixture

pytestmark = pytest.mark.timeout(120)
server = server_fixture({"GPUPOOL_MAX_PENDING_PER_QUEUE": "50"})


def _team_with_member(server) -> tuple[str, str]:  # noqa: ANN001
    team = f"q{uuid.uuid4().hex[:8]}"
    with server.client() as admin:
        assert admin.post("/api/v1/teams", json={"name": team}).status_code == 201
        assert admin.post("/api/v1/users", json={"name": f"{team}-u", "team": team}).status_code == 201
        token = admin.post("/api/v1/tokens", json={"user": f"{team}-u", "name": "t"}).json()["token"]
    return team, token


def job(name: str, **extra) -> dict:  # noqa: ANN003
    return {"name": name, "command": ["true"], "resources": {"gpu": 0.1}, **extra}


def _snapshot_queue(server, name: str) -> Queue:  # noqa: ANN001
    db = Database(server.db_url)
    try:
        return next(q for q in SchedulingService(db).snapshot(time.time()).queues if q.name == name)
    finally:
        db.dispose()


def test_admin_sets_policy_and_quotas_and_members_are_held_to_them(server) -> None:  # noqa: ANN001
    team, member = _team_with_member(server)
    body = {"name": "train", "team": team, "guarantee_milli": 2000, "limit_milli": 4000,
            "max_priority": 0, "allow_non_preemptible": False, "max_min_runtime_s": 60, "max_pending_jobs": 2,
            "model_guarantees_milli": {"H100-80GB": 4000, "A100-80GB": 1000},
            "memory_guarantee_mib": 81920, "memory_limit_mib": 163840}
    with server.client() as admin:
        r = admin.post("/api/v1/queues", json=body)
        assert r.status_code == 201, r.text
        created = r.json()
        assert {k: created[k] for k in body if k not in ("name", "team")} == \
               {k: v for k, v in body.items() if k not in ("name", "team")}
        assert created["allocated_memory_mib"] == 0
    with server.client(member) as c:
        for extra, field, words in [({"priority": "high"}, "priority", "up to 0"),
                                    ({"preemptible": False}, "preemptible", "non-preemptible"),
                                    ({"min_runtime_s": 61}, "min_runtime_s", "up to 60")]:
            r = c.post("/api/v1/jobs", json=job("p", queue="train", **extra))
            assert r.status_code == 422, r.text
            assert r.json()["errors"][0]["field"] == field and words in r.json()["detail"]
            assert f"{team}/train" in r.json()["detail"]
        codes = [c.post("/api/v1/jobs", json=job(f"ok{i}", queue="train")).status_code for i in range(3)]
        assert codes == [201, 201, 429]  # max_pending_jobs 2
    q = _snapshot_queue(server, f"{team}/train")
    assert q.model_guarantees_milli == (("A100-80GB", 1000), ("H100-80GB", 4000))
    assert (q.memory_guarantee_mib, q.memory_limit_mib, q.guarantee_milli, q.limit_milli) == (81920, 163840, 2000, 4000)

    with server.client() as admin:  # null removes a limit; fields left out keep their value
        r = admin.patch("/api/v1/queues/train", params={"team": team}, json={
            "max_priority": None, "allow_non_preemptible": True, "max_min_runtime_s": None,
            "model_guarantees_milli": {"H100-80GB": 8000}, "memory_limit_mib": None, "max_pending_jobs": 10})
        assert r.status_code == 200, r.text
        got = r.json()
        assert got["max_priority"] is None and got["allow_non_preemptible"] is True
        assert got["max_pending_jobs"] == 10 and got["memory_guarantee_mib"] == 81920 and got["limit_milli"] == 4000
        assert got["model_guarantees_milli"] == {"H100-80GB": 8000} and got["memory_limit_mib"] is None
        kinds = [e["kind"] for e in admin.get("/api/v1/events", params={"limit": 20}).json()["items"]]
        assert "queue_updated" in kinds
    with server.client(member) as c:  # the new policy applies at once (the server's cache was dropped)
        r = c.post("/api/v1/jobs", json=job("now", queue="train", priority="critical", preemptible=False,
                                            min_runtime_s=3600))
        assert r.status_code == 201, r.text
    assert _snapshot_queue(server, f"{team}/train").model_guarantees_milli == (("H100-80GB", 8000),)


@pytest.mark.parametrize(("change", "field"), [
    ({"memory_guarantee_mib": 2048, "memory_limit_mib": 1024}, "memory_limit_mib"),
    ({"max_priority": 10**7}, "max_priority"),
    ({"max_pending_jobs": -1}, "max_pending_jobs"),
    ({"model_guarantees_milli": {"H100-80GB": -5}}, "model_guarantees_milli.H100-80GB"),
    ({"model_guarantees_milli": {"": 1000}}, "model_guarantees_milli"),
    ({"allow_non_preemptible": None}, "allow_non_preemptible"),
])
def test_bad_policy_values_are_422_naming_the_field(server, change: dict, field: str) -> None:  # noqa: ANN001
    team, member = _team_with_member(server)
    with server.client() as admin:
        r = admin.patch("/api/v1/queues/default", params={"team": team}, json=change)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["field"].startswith(field), r.json()
    with server.client(member) as c:
        r = c.patch("/api/v1/queues/default", params={"team": team}, json={"max_priority": 5})
        assert r.status_code == 403


def test_the_cli_manages_queues(server, monkeypatch, tmp_path) -> None:  # noqa: ANN001
    team, _ = _team_with_member(server)
    cli = admin_cli(server, monkeypatch, tmp_path)

    code, out, err = cli("admin", "queue", "create", "serve", "--team", team, "--guarantee", "2", "--limit", "3",
                         "--max-priority", "high", "--no-allow-non-preemptible", "--max-min-runtime", "2h",
                         "--max-pending", "7", "--model-guarantee", "H100-80GB=1.5",
                         "--memory-guarantee", "80GiB", "--memory-limit", "160GiB")
    assert code == 0, err
    assert "serve" in out and "H100-80GB 1.5" in out and "7200 s" in out and "refused" in out
    with server.client() as admin:
        q = next(q for q in admin.get("/api/v1/queues").json()["items"] if q["team"] == team and q["name"] == "serve")
    assert (q["max_priority"], q["max_min_runtime_s"], q["max_pending_jobs"]) == (100, 7200, 7)
    assert (q["memory_guarantee_mib"], q["memory_limit_mib"]) == (81920, 163840)
    assert q["model_guarantees_milli"] == {"H100-80GB": 1500} and q["allow_non_preemptible"] is False

    code, out, err = cli("admin", "queue", "set", "serve", "--team", team, "--limit", "none",
                         "--max-priority", "none", "--no-model-guarantees", "--allow-non-preemptible")
    assert code == 0, err
    code, out, _ = cli("admin", "queue", "show", "serve", "--team", team)
    assert code == 0 and "allowed" in out
    with server.client() as admin:
        q = next(q for q in admin.get("/api/v1/queues").json()["items"] if q["team"] == team and q["name"] == "serve")
    assert q["limit_milli"] is None and q["max_priority"] is None and q["model_guarantees_milli"] == {}
    assert q["max_pending_jobs"] == 7  # left out: kept

    code, _, err = cli("admin", "queue", "set", "serve", "--team", team, "--memory-limit", "1GiB")
    assert code == 1 and "memory_limit_mib" in err and "Traceback" not in err
    code, _, err = cli("admin", "queue", "set", "serve", "--team", team, "--memory-limit", "lots")
    assert code == 1 and "--memory-limit 'lots'" in err
    code, _, err = cli("admin", "queue", "set", "serve", "--team", team)
    assert code == 1 and "nothing to change" in err
    code, out, _ = cli("admin", "queue", "delete", "serve", "--team", team)
    assert code == 0 and "deleted" in out
