"""Reclaim and priority preemption through a real server, its scheduling loop and a fake agent.

team-b borrows the only GPU; team-a (guarantee 1 GPU) submits: the loop preempts team-b's
job with a readable reason, team-a's job runs, team-b's job waits with a pending reason.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

pytestmark = [pytest.mark.timeout(120)]

server = server_fixture({"GPUPOOL_SCHEDULER_POLICY": "gpupool"})


def wait_for(fn, agents=(), timeout: float = 30.0):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for a in agents:
            a.heartbeat()
            a.step(finish=False)  # jobs keep running until stopped
        value = fn()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"condition not met in {timeout}s")


def test_reclaim_preempts_the_borrower_with_a_reason(server) -> None:  # noqa: ANN001
    tag = uuid.uuid4().hex[:6]
    model = f"R-{tag}"
    agent = FakeAgent(server.url, server.bootstrap_token, f"node-reclaim-{tag}", gpus=1, model=model)
    agent.register()
    team_a, team_b = f"team-a-{tag}", f"team-b-{tag}"
    body = {"command": ["python", "-c", "import time; time.sleep(600)"],
            "resources": {"gpu": 1, "models": [model]}}
    with server.client() as c:
        for team in (team_a, team_b):
            assert c.post("/api/v1/teams", json={"name": team}).status_code in (200, 201)
        r = c.patch(f"/api/v1/queues/default?team={team_a}", json={"guarantee_milli": 1000})
        assert r.status_code == 200, r.text
        borrower = c.post("/api/v1/jobs", json={**body, "name": "borrower", "team": team_b}).json()
        wait_for(lambda: c.get(f"/api/v1/jobs/{borrower['id']}").json()["status"] == "running",
                 agents=(agent,))
        owner = c.post("/api/v1/jobs", json={**body, "name": "owner", "team": team_a}).json()
        wait_for(lambda: c.get(f"/api/v1/jobs/{owner['id']}").json()["status"] == "running",
                 agents=(agent,))
        events = c.get(f"/api/v1/jobs/{borrower['id']}/events").json()["items"]
        text = " ".join(str(e) for e in events)
        assert f"reclaimed by queue {team_a}/default (guarantee 1 GPU) for job {owner['id']}" in text
        back = wait_for(lambda: (j := c.get(f"/api/v1/jobs/{borrower['id']}").json())["status"] == "pending"
                        and j["pending_reason"] and j, agents=(agent,))
        assert back["pending_reason"]["code"] in ("capacity", "quota")
        c.post(f"/api/v1/jobs/{owner['id']}/cancel")
        c.post(f"/api/v1/jobs/{borrower['id']}/cancel")
    agent.close()


def test_priority_preemption_respects_min_runtime(server) -> None:  # noqa: ANN001
    tag = uuid.uuid4().hex[:6]
    model = f"P-{tag}"
    agent = FakeAgent(server.url, server.bootstrap_token, f"node-prio-{tag}", gpus=1, model=model)
    agent.register()
    team = f"team-p-{tag}"
    body = {"command": ["python", "-c", "import time; time.sleep(600)"],
            "resources": {"gpu": 1, "models": [model]}, "team": team}
    with server.client() as c:
        assert c.post("/api/v1/teams", json={"name": team}).status_code in (200, 201)
        low = c.post("/api/v1/jobs", json={**body, "name": "low", "priority": "low",
                                           "min_runtime_s": 3}).json()
        wait_for(lambda: c.get(f"/api/v1/jobs/{low['id']}").json()["status"] == "running",
                 agents=(agent,))
        started = time.monotonic()
        high = c.post("/api/v1/jobs", json={**body, "name": "high", "priority": "high"}).json()
        # protected by its minimum runtime first: the high job waits and says why
        reason = wait_for(lambda: c.get(f"/api/v1/jobs/{high['id']}").json()["pending_reason"],
                          agents=(agent,))
        assert "minimum" in reason["message"] or time.monotonic() - started >= 3
        wait_for(lambda: c.get(f"/api/v1/jobs/{high['id']}").json()["status"] == "running",
                 agents=(agent,))
        assert time.monotonic() - started >= 2.5
        events = " ".join(str(e) for e in c.get(f"/api/v1/jobs/{low['id']}/events").json()["items"])
        assert f"preempted: job {high['id']} (priority 100)" in events
        for j in (low, high):
            c.post(f"/api/v1/jobs/{j['id']}/cancel")
    agent.close()
