"""Accelerator health through the real loop: a real agent process on simulated GPUs, faults injected
into it through its faults file (GPUPOOL_SIM_FAULTS_FILE). A critical XID or a lost GPU cordons
that GPU, stops and requeues its job (never onto an unhealthy GPU), cordons the node at the second
one; an admin returns them to service; a GPU missing when the agent re-registers (with its own node
token, after a restart) is cordoned too; a GPU cordoned between a cycle's snapshot and its apply is
not used. On SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from controlplane.core.states import Role
from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.db.models import JobRow
from controlplane.loops.runner import Loops
from controlplane.scheduler import schedule
from controlplane.services import health
from controlplane.services.principal import Principal
from controlplane.settings import Settings
from tests.integration.e2e_agent_support import AgentProc, wait_until
from tests.support.cli import admin_cli
from tests.support.factories import make_job, make_node
from tests.support.fake_agent import FakeAgent
from tests.support.fixtures import server_fixture

pytestmark = pytest.mark.timeout(240)
server = server_fixture({"GPUPOOL_HEARTBEAT_INTERVAL_S": "0.5", "GPUPOOL_UNHEALTHY_GPUS_TO_CORDON_NODE": "2"})
GPUS = 4


def _job(c, name: str) -> str:  # noqa: ANN001
    r = c.post("/api/v1/jobs", json={"name": name, "command": ["sleep", "300"], "grace_s": 1,
                                     "resources": {"gpu": 1, "cpu_milli": 10, "memory_mib": 16}})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def _running_on(c, job_id: str, attempt_after: int = 0) -> tuple[int, str] | None:  # noqa: ANN001
    """(attempt, accelerator) once the job runs an attempt later than ``attempt_after``."""
    job = c.get(f"/api/v1/jobs/{job_id}").json()
    if job["status"] == "running" and job["attempt"] > attempt_after and job["placement"]:
        return job["attempt"], job["placement"][0]["slices"][0]["accelerator_uuid"]
    return None


def _accs(c, node: str) -> dict[str, dict]:  # noqa: ANN001
    return {a["uuid"]: a for a in c.get(f"/api/v1/nodes/{node}").json()["accelerators"]}


def test_unhealthy_gpus_are_cordoned_their_jobs_requeued_and_the_node_after_two(server, tmp_path, monkeypatch):  # noqa: ANN001, ANN201
    name = f"health-{'pg' if 'postgresql' in server.db_url else 'lite'}"
    faults = tmp_path / "faults"
    faults.write_text("")
    agent = AgentProc(server.url, server.bootstrap_token, tmp_path, name, gpus=f"1x{GPUS}xT4",
                      env={"GPUPOOL_SIM_FAULTS_FILE": str(faults)})

    def inject(line: str) -> None:
        with faults.open("a") as f:
            f.write(line + "\n")

    try:
        agent.start().wait_connected(60)
        with server.client() as c:
            index = {a["uuid"]: a["index"] for a in _accs(c, name).values()}
            first, second = _job(c, "h-first"), _job(c, "h-second")
            attempt1, gpu1 = wait_until(lambda: _running_on(c, first), 60, "first job running")
            _, gpu2 = wait_until(lambda: _running_on(c, second), 60, "second job running")

            inject(f"xid {index[gpu1]} 79")  # the first job's GPU falls over
            bad = wait_until(lambda: (a := _accs(c, name)[gpu1])["unhealthy_reason"] and a, 60, "GPU cordoned")
            assert not bad["healthy"]
            assert bad["unhealthy_reason"] == "XID 79" and bad["unhealthy_since"]
            _, moved = wait_until(lambda: _running_on(c, first, attempt1), 90, "first job requeued and running")
            assert moved not in (gpu1, gpu2)
            stops = [e for e in c.get(f"/api/v1/jobs/{first}/events").json()["items"] if e["kind"] == "stop_requested"]
            assert stops[0]["reason"] == f"accelerator {gpu1} unhealthy: XID 79"
            assert _running_on(c, second)[1] == gpu2  # its neighbour ran on
            node = c.get(f"/api/v1/nodes/{name}").json()
            assert not node["cordoned"]  # one unhealthy GPU of four: the node stays open

            inject(f"lost {index[gpu2]}")  # the second job's GPU falls off the bus: two unhealthy
            wait_until(lambda: c.get(f"/api/v1/nodes/{name}").json()["health_cordoned"], 60, "node cordoned")
            assert not _accs(c, name)[gpu2]["healthy"]
            wait_until(lambda: c.get(f"/api/v1/jobs/{second}").json()["status"] == "pending", 60, "second requeued")
            events = c.get("/api/v1/events", params={"node": name, "limit": 50}).json()["items"]
            kinds = [e["kind"] for e in events]
            assert kinds.count("accelerator_unhealthy") == 2 and "node_cordoned" in kinds

        inject(f"healthy {index[gpu1]}")  # the GPU was reset: its agent says so ...
        with server.client() as c:
            wait_until(lambda: (_accs(c, name)[gpu1]["telemetry"] or {}).get("healthy"), 60, "GPU reports healthy")
        # ... and an admin returns it to service (CLI)
        code, out, err = admin_cli(server, monkeypatch, tmp_path)("admin", "accelerator", "mark-healthy", gpu1)
        assert code == 0 and "healthy again" in out, err
        with server.client() as c:
            node = c.get(f"/api/v1/nodes/{name}").json()
            assert not node["cordoned"] and not node["health_cordoned"]  # 1 unhealthy < 2
            _, again = wait_until(lambda: _running_on(c, second), 90, "second job placed again")
            assert again != gpu2  # never on the lost GPU

            agent.stop()  # restart the agent; its lost GPU is no longer discovered
            c.post(f"/api/v1/accelerators/{gpu2}/mark-healthy")  # wrongly returned to service
            agent.start().wait_connected(60)
            missing = wait_until(lambda: (a := _accs(c, name)[gpu2])["unhealthy_reason"] and a, 60,
                                 "missing GPU cordoned at re-registration")
            assert missing["unhealthy_reason"] == "missing from its node's registration"
            rereg = [e for e in c.get("/api/v1/events", params={"node": name}).json()["items"]
                     if e["kind"] == "node_reregistered"]
            assert rereg and rereg[0]["actor"] == f"node:{name}"  # with its own node token
    finally:
        with server.client() as c:  # cancelled jobs never requeue onto the other tests' nodes
            for status in ("pending", "scheduled", "running"):
                for j in c.get("/api/v1/jobs", params={"status": status}).json()["items"]:
                    c.post(f"/api/v1/jobs/{j['id']}/cancel")
        agent.stop()
        agent.reap_jobs()


def test_admins_cordon_and_clear_accelerators(server) -> None:  # noqa: ANN001
    agent = FakeAgent(server.url, server.bootstrap_token, f"manual-{'pg' if 'postgresql' in server.db_url else 'lite'}",
                      gpus=2, model="M-manual")
    agent.register()
    try:
        gpu = agent.uuids[0]
        with server.client() as c:
            r = c.post(f"/api/v1/accelerators/{gpu}/mark-unhealthy", json={"reason": "fan replacement"})
            assert r.status_code == 200 and r.json()["healthy"] is False
            assert r.json()["unhealthy_reason"].startswith("fan replacement") and r.json()["node"] == agent.hostname
            job = c.post("/api/v1/jobs", json={"name": "m", "command": ["true"],
                                               "resources": {"gpu": 1, "models": ["M-manual"]}}).json()["id"]
            wait_until(lambda: agent.heartbeat() and c.get(f"/api/v1/jobs/{job}").json()["placement"], 30, "placed")
            assert c.get(f"/api/v1/jobs/{job}").json()["placement"][0]["slices"][0]["accelerator_uuid"] == agent.uuids[1]
            assert c.post(f"/api/v1/accelerators/{gpu}/mark-healthy").json()["healthy"] is True
            assert c.post("/api/v1/accelerators/GPU-nope/mark-healthy").status_code == 404
            c.post(f"/api/v1/jobs/{job}/cancel")
    finally:
        agent.close()


def test_a_gpu_cordoned_between_snapshot_and_apply_is_not_used(db_url, tmp_path) -> None:  # noqa: ANN001
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        (gpu,) = make_node(db, "race-1", gpus=1, memory_mib=1000)
        job = make_job(db, "race", 0.5)
        loops = Loops(db, Settings(home=tmp_path, run_loops=False))
        decision = schedule(loops.service.snapshot(0.0), loops.config)
        assert [p.job_id for p in decision.placements] == [str(job)]
        health.mark_unhealthy(db, Principal(Role.ADMIN, 0, user="ops"), gpu, "XID 79", cordon_node_after=2)
        assert loops.service.apply(decision)["skipped"] == 1
        with db.read() as s:
            assert s.scalar(select(JobRow.status).where(JobRow.id == job)) == "pending"
    finally:
        db.dispose()
