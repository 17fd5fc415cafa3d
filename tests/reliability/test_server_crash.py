"""The control plane killed (-9) in the middle of things: during a burst of 200 submits every
acknowledged job exists exactly once and nothing is half-written; with two replicas, the survivor
takes the scheduler lease within the lease time and nothing is double-booked."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import text

from controlplane.db.base import make_engine
from tests.support.db import database
from tests.support.fake_agent import FakeAgent
from tests.support.server import start_server
from tests.support.waiting import wait_until

JOBS = 200


def _submit(url: str, token: str, i: int) -> tuple[int, str | None]:
    """One client's submit with its idempotency key; (status, job id) or (0, None) on no answer."""
    try:
        r = httpx.post(f"{url}/api/v1/jobs", headers={"Authorization": f"Bearer {token}",
                                                      "Idempotency-Key": f"burst-{i}"},
                       json={"name": f"burst{i}", "command": ["true"], "resources": {"gpu": 0.01}}, timeout=10)
    except httpx.HTTPError:
        return 0, None
    return r.status_code, (r.json()["id"] if r.status_code in (200, 201) else None)


@pytest.mark.timeout(300)
def test_kill_9_during_a_submit_burst_loses_and_duplicates_nothing(tmp_path) -> None:  # noqa: ANN001
    with database("postgresql", tmp_path) as url:
        server = start_server(url, home=tmp_path / "h")
        acked: dict[int, str] = {}
        lock = threading.Lock()

        def client(i: int) -> None:
            status, job_id = _submit(server.url, server.admin_token, i)
            if job_id:
                with lock:
                    acked[i] = job_id

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(client, i) for i in range(JOBS)]
            wait_until(lambda: len(acked) >= 60, 60, "60 acknowledged submits")
            server.kill()  # SIGKILL in the middle of the burst
            for f in futures:
                f.result()
        before = dict(acked)
        assert 60 <= len(before) < JOBS
        server = start_server(url, home=tmp_path / "h", admin_token=server.admin_token,
                              bootstrap_token=server.bootstrap_token)
        try:
            # every client retries with its key: old jobs answer again, the rest are created now
            results = {i: _submit(server.url, server.admin_token, i) for i in range(JOBS)}
            assert all(status in (200, 201) for status, _ in results.values()), results
            for i, job_id in before.items():
                assert results[i] == (200, job_id)  # acknowledged once, the same job ever after
            engine = make_engine(url, pool_size=1)
            with engine.connect() as c:
                per_key = dict(c.execute(text("SELECT idempotency_key, count(*) FROM jobs "
                                              "GROUP BY idempotency_key")).all())
                orphans = c.execute(text("SELECT count(*) FROM jobs j WHERE NOT EXISTS (SELECT 1 FROM "
                                         "events e WHERE e.job_id = j.id AND e.kind = 'submitted')")).scalar()
            engine.dispose()
            assert per_key == {f"burst-{i}": 1 for i in range(JOBS)}
            assert orphans == 0  # no job without its submit event: nothing half-written
            print(f"kill -9 during submits: {len(before)} acknowledged before the kill, {JOBS} jobs after "
                  f"retries, 0 duplicates, 0 half-written")
            agent = FakeAgent(server.url, server.bootstrap_token, "after-crash", gpus=1)
            agent.register()  # the pool resumes: the restarted server places the backlog
            with server.client() as c:
                wait_until(lambda: any(j["status"] != "pending" for j in c.get(
                    "/api/v1/jobs", params={"limit": 1000}).json()["items"]), 60, "a placement")
            agent.close()
        finally:
            server.stop()


def _leader(url: str) -> str | None:
    engine = make_engine(url, pool_size=1)
    try:
        with engine.connect() as c:
            return c.execute(text("SELECT holder FROM leases WHERE name = 'scheduler' "
                                  "AND expires_at > :now"), {"now": time.time()}).scalar()
    finally:
        engine.dispose()


@pytest.mark.timeout(300)
def test_the_surviving_replica_takes_over_scheduling_within_the_lease(tmp_path) -> None:  # noqa: ANN001
    lease_s = 5.0
    with database("postgresql", tmp_path) as url:
        env = {"GPUPOOL_SCHEDULER_LEASE_S": str(lease_s)}
        first = start_server(url, env={**env, "GPUPOOL_REPLICA_ID": "replica-a"}, home=tmp_path / "a")
        second = start_server(url, env={**env, "GPUPOOL_REPLICA_ID": "replica-b"}, home=tmp_path / "b",
                              admin_token=first.admin_token, bootstrap_token=first.bootstrap_token)
        servers = {"replica-a": first, "replica-b": second}
        try:
            holder = wait_until(lambda: _leader(url), 30, "a leader")
            other = ({"replica-a", "replica-b"} - {holder}).pop()
            leader, survivor = servers[holder], servers[other]
            agent = FakeAgent(survivor.url, survivor.bootstrap_token, "takeover", gpus=1)
            agent.register()
            leader.kill()
            killed_at = time.monotonic()
            with survivor.client() as c:
                job = c.post("/api/v1/jobs", json={"name": "after", "command": ["true"],
                                                   "resources": {"gpu": 1}}).json()
                wait_until(lambda: (agent.heartbeat(), c.get(f"/api/v1/jobs/{job['id']}").json())[1]["status"]
                           == "scheduled", 60, "the survivor to place the job")
            took = time.monotonic() - killed_at
            print(f"leader killed: the survivor placed a job {took:.1f} s later (lease {lease_s:g} s)")
            assert took <= lease_s + 10  # within the lease (plus a few cycles)
            assert _leader(url) == other
            engine = make_engine(url, pool_size=1)
            with engine.connect() as c:  # nothing double-booked: counters equal the live slices
                rows = c.execute(text(
                    "SELECT a.allocated_milli, COALESCE(SUM(s.compute_milli), 0) FROM accelerators a "
                    "LEFT JOIN slices s ON s.accelerator_uuid = a.uuid AND s.released_at IS NULL "
                    "GROUP BY a.uuid, a.allocated_milli")).all()
            engine.dispose()
            assert rows and all(milli == live <= 1000 for milli, live in rows), rows
            agent.close()
        finally:
            for s in (first, second):
                s.stop()
