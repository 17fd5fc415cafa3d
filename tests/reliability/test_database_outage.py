"""PostgreSQL stopped for 60 s and started again under load, with default timeouts: no running job
is requeued or failed, and no status report or log line is lost."""

from __future__ import annotations

import threading
import time

import httpx
import pytest

from tests.integration.e2e_agent_support import AgentProc, Api, wait_until
from tests.reliability.support import PrivatePostgres
from tests.support.server import start_server

DEFAULTS = {"GPUPOOL_HEARTBEAT_TIMEOUT_S": "40", "GPUPOOL_LIVENESS_INTERVAL_S": "5",
            "GPUPOOL_SCHEDULER_INTERVAL_S": "2", "GPUPOOL_SCHEDULER_LEASE_S": "15",
            "GPUPOOL_ASSIGNMENT_POLL_S": "0.25"}  # the server's own defaults, not the tests' fast ones
LINES = 300  # each job prints a numbered line every 0.5 s: 150 s, across the whole outage
COUNTER = ("import time\nfor i in range({n}):\n    print('line', i, flush=True)\n    time.sleep(0.5)\n")


@pytest.fixture
def private_pg():  # noqa: ANN201
    pg = PrivatePostgres()
    yield pg
    pg.destroy()


@pytest.mark.timeout(600)
def test_a_60_s_database_outage_costs_nothing(private_pg, tmp_path) -> None:  # noqa: ANN001
    server = start_server(private_pg.url, env=DEFAULTS, home=tmp_path / "home")
    agents = [AgentProc(server.url, server.bootstrap_token, tmp_path, f"db-node{i}", heartbeat_s=10.0).start()
              for i in range(2)]
    api = Api(server.url, server.admin_token)
    load = threading.Event()
    try:
        for a in agents:
            a.wait_connected(60)
        jobs = [api.submit({"name": f"steady{i}", "command": ["python", "-c", COUNTER.format(n=LINES)],
                            "resources": {"gpu": 1, "cpu_milli": 100, "memory_mib": 64}, "grace_s": 2})
                for i in range(2)]
        wait_until(lambda: all(api.job(j["id"])["status"] == "running" for j in jobs), 60, "jobs running")
        wait_until(lambda: all("line 5\n" in api.logs(j["id"]) for j in jobs), 60, "first lines")

        def keep_submitting() -> None:  # the pool is used all along: submits fail, then work again
            with httpx.Client(base_url=server.url, headers=server.headers(), timeout=5) as c:
                i = 0
                while not load.is_set():
                    try:
                        c.post("/api/v1/jobs", json={"name": f"load{i}", "command": ["true"],
                                                     "resources": {"gpu": 0.01}})
                    except httpx.HTTPError:
                        pass
                    i += 1
                    time.sleep(0.2)

        threading.Thread(target=keep_submitting, daemon=True).start()
        private_pg.stop()
        down = httpx.get(f"{server.url}/readyz", timeout=10)
        assert down.status_code == 503  # the server says so, and stays up
        time.sleep(60)  # the outage under test: 60 s without a database
        private_pg.start()
        back = time.monotonic()
        wait_until(lambda: httpx.get(f"{server.url}/readyz", timeout=10).status_code == 200, 60, "ready")
        print(f"database outage: ready {time.monotonic() - back:.1f} s after PostgreSQL came back")
        done = [wait_until(lambda j=j: (x := api.job(j["id"]))["status"] in ("succeeded", "failed", "cancelled")
                           and x, 300, "the job to end") for j in jobs]
        load.set()
        for job in done:
            assert (job["status"], job["attempt"], job["exit_code"]) == ("succeeded", 1, 0), job
            kinds = [e["kind"] for e in api.http.get(f"/api/v1/jobs/{job['id']}/events").json()["items"]]
            assert "lost" not in kinds and "requeued" not in kinds, kinds
            numbers = [int(line.split()[1]) for line in api.logs(job["id"]).splitlines()
                       if line.startswith("line ")]
            assert numbers == list(range(LINES)), f"lost or repeated lines: {sorted(set(range(LINES)) - set(numbers))}"
        nodes = api.http.get("/api/v1/nodes").json()["items"]
        assert all(n["state"] == "ready" for n in nodes), nodes
    finally:
        load.set()
        for a in agents:
            a.stop()
            a.reap_jobs()
        server.stop()
