"""Gangs get one attempt across nodes with a shared rendezvous; preemption stops and requeues."""

from __future__ import annotations

import uuid

from sqlalchemy import select

from controlplane.core.resources import SliceGrant
from controlplane.core.snapshot import Decision, MemberPlacement, Placement, Preemption
from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.db.models import JobRow
from controlplane.services import agent as agent_svc
from controlplane.services.auth import authenticate, bootstrap
from controlplane.services.scheduling import SchedulingService
from controlplane.core import wire
from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture
from tests.support.factories import make_job, make_node

server = server_fixture()


def test_gang_rendezvous_and_failure_stops_the_rest(server) -> None:  # noqa: ANN001
    model = f"G-{uuid.uuid4().hex[:6]}"
    agents = [FakeAgent(server.url, server.bootstrap_token, f"gang-{i}-{model.lower()}", gpus=1, model=model)
              for i in range(2)]
    for a in agents:
        a.register()
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json={"name": "gang", "command": ["train"],
                                              "resources": {"gpu": 1, "nodes": 2, "models": [model]}}).json()["id"]
        orders = {}
        import time

        deadline = time.monotonic() + 20
        while len(orders) < 2 and time.monotonic() < deadline:
            for a in agents:
                a.heartbeat()
                for o in a.assignments()["start"]:
                    orders[o["rank"]] = (a, o)
            time.sleep(0.1)
        assert sorted(orders) == [0, 1], c.get(f"/api/v1/jobs/{job_id}").json()
        (a0, o0), (a1, o1) = orders[0], orders[1]
        assert o0["attempt_id"] == o1["attempt_id"] and a0 is not a1
        assert o0["rendezvous"] == {**o1["rendezvous"], "node_rank": 0}
        assert o1["rendezvous"]["node_rank"] == 1 and o0["rendezvous"]["nnodes"] == 2 and 10000 <= o0["rendezvous"]["master_port"] < 29500
        for a, o in orders.values():
            a.report(o["job_id"], o["attempt_id"], "started", rank=o["rank"])
        assert c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"
        a1.report(job_id, o1["attempt_id"], "exited", rank=1, exit_code=2)
        stops = a0.assignments()["stop"]
        assert [s["attempt_id"] for s in stops] == [o0["attempt_id"]]
        assert c.get(f"/api/v1/jobs/{job_id}").json()["status"] == "running"  # rank 0 still alive
        a0.report(job_id, o0["attempt_id"], "killed", rank=0, exit_code=-15)
        done = c.get(f"/api/v1/jobs/{job_id}").json()
        assert done["status"] == "failed" and done["exit_code"] == 2
        assert [m["rank"] for m in done["placement"]] == [0, 1]
    for a in agents:
        a.close()


def test_a_gang_whose_member_never_started_still_ends(server) -> None:  # noqa: ANN001
    """Rank 1's agent lost its start order (say it restarted with no state): the stop order names
    the rank, the agent answers for that rank, and the attempt ends with every slice released."""
    import time

    model = f"N-{uuid.uuid4().hex[:6]}"
    agents = [FakeAgent(server.url, server.bootstrap_token, f"never-{i}-{model.lower()}", gpus=1, model=model)
              for i in range(2)]
    for a in agents:
        a.register()
    with server.client() as c:
        job_id = c.post("/api/v1/jobs", json={"name": "never", "command": ["train"],
                                              "resources": {"gpu": 1, "nodes": 2, "models": [model]}}).json()["id"]
        delivered = set()
        deadline = time.monotonic() + 20
        while len(delivered) < 2 and time.monotonic() < deadline:
            for i, a in enumerate(agents):
                a.heartbeat()
                for o in a.assignments()["start"]:
                    delivered.add(i)
                    if i == 0:  # rank 0 starts; rank 1's order is handed out and then forgotten
                        a.report(o["job_id"], o["attempt_id"], "started", rank=o["rank"])
                        a.running[o["attempt_id"]] = (o["job_id"], o["rank"])
            time.sleep(0.1)
        assert delivered == {0, 1}
        assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
        stops = agents[1].assignments()["stop"]
        assert [(x["job_id"], x["rank"]) for x in stops] == [(job_id, 1)]
        agents[1].report(job_id, stops[0]["attempt_id"], "killed", rank=stops[0]["rank"])  # "not running here"
        agents[0].step()  # rank 0 obeys its stop order
        done = c.get(f"/api/v1/jobs/{job_id}").json()
        assert done["status"] == "cancelled", done
        for a in agents:
            node = c.get(f"/api/v1/nodes/{a.hostname}").json()
            assert node["accelerators"][0]["allocated_milli"] == 0
    for a in agents:
        a.close()


def test_preemption_stops_then_requeues(tmp_path, db_url) -> None:  # noqa: ANN001
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        bootstrap(db, admin_token="adm")
        (gpu,) = make_node(db, "p1", gpus=1, memory_mib=1000)
        job_id = make_job(db, "victim", 1.0)
        svc = SchedulingService(db)
        placed = svc.apply(Decision(placements=[Placement(str(job_id), (MemberPlacement(
            0, "p1", (SliceGrant(gpu, 1000, 1000),)),))]))
        assert placed["placed"] == 1
        from controlplane.core.states import Role
        from controlplane.services.auth import Principal

        node = Principal(Role.AGENT, 0, node_id=1, node="p1")
        start = agent_svc.assignments(db, node).start[0]
        agent_svc.report_status(db, node, wire.StatusBatch(node_id="1", reports=[wire.StatusReport(
            seq=1, job_id=str(job_id), attempt_id=start.attempt_id, kind="started", ts=0)]))
        svc.apply(Decision(preemptions=[Preemption(str(job_id), "reclaimed by team-b for job 9")]))
        a = agent_svc.assignments(db, node)
        assert [s.reason for s in a.stop] == ["reclaimed by team-b for job 9"] and a.desired_attempts == []
        with db.read() as s:
            assert s.scalar(select(JobRow.status).where(JobRow.id == job_id)) == "running"
        agent_svc.report_status(db, node, wire.StatusBatch(node_id="1", reports=[wire.StatusReport(
            seq=2, job_id=str(job_id), attempt_id=start.attempt_id, kind="killed", exit_code=-15, ts=0)]))
        with db.read() as s:
            job = s.get(JobRow, job_id)
            assert job.status == "pending" and "reclaimed by team-b" in job.status_reason
        assert authenticate(db, "adm").is_admin
    finally:
        db.dispose()
