"""Two server replicas on one PostgreSQL, 200 jobs submitted concurrently onto a pool too small
to run them at once, fake agents running them: no accelerator is ever over-committed, every
accepted job exists exactly once and ends final."""

from __future__ import annotations

import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from sqlalchemy import create_engine, text

from tests.support.db import database
from tests.support.fake_agent import FakeAgent
from tests.support.server import start_server

pytestmark = [pytest.mark.postgres, pytest.mark.timeout(180)]

JOBS = 200
OVERCOMMIT = text("""
    SELECT a.uuid, a.allocated_milli, a.allocated_memory_mib, a.memory_mib,
           COALESCE(SUM(s.compute_milli), 0), COALESCE(SUM(s.memory_mib), 0)
      FROM accelerators a LEFT JOIN slices s ON s.accelerator_uuid = a.uuid AND s.released_at IS NULL
  GROUP BY a.uuid, a.allocated_milli, a.allocated_memory_mib, a.memory_mib""")


def check_capacity(engine) -> int:  # noqa: ANN001
    """Asserts no accelerator is over-committed and counters match the slices; returns slices milli."""
    used = 0
    with engine.connect() as c:
        for uuid, milli, mem, cap, slice_milli, slice_mem in c.execute(OVERCOMMIT):
            assert slice_milli <= 1000 and slice_mem <= cap, f"{uuid} over-committed"
            assert (milli, mem) == (slice_milli, slice_mem), f"{uuid} counters drifted"
            used += slice_milli
    return used


def test_two_replicas_200_jobs(tmp_path) -> None:  # noqa: ANN001
    with database("postgresql", tmp_path) as url:
        env = {"GPUPOOL_SCHEDULER_INTERVAL_S": "0.1", "GPUPOOL_HEARTBEAT_TIMEOUT_S": "30"}
        first = start_server(url, env=env, home=tmp_path / "a")
        second = start_server(url, env=env, home=tmp_path / "b", admin_token=first.admin_token,
                              bootstrap_token=first.bootstrap_token)
        replicas = [first, second]
        engine = create_engine(url.replace("+psycopg", "+psycopg"))
        try:
            _run(replicas, engine)
        finally:
            engine.dispose()
            for srv in replicas:
                srv.stop()
        for srv in replicas:
            assert "Traceback" not in srv.log_text(), srv.log_text()[-3000:]


def _run(replicas, engine) -> None:  # noqa: ANN001
    agents = [FakeAgent(replicas[i % 2].url, replicas[0].bootstrap_token, f"conc-{i}", gpus=2,
                        memory_mib=16000) for i in range(4)]
    for a in agents:
        a.register()
    rng = random.Random(7)
    sizes = [rng.choice([0.25, 0.5, 1, 2]) for _ in range(JOBS)]
    accepted: dict[str, str] = {}  # idempotency key -> job id
    lock = threading.Lock()

    def submit(i: int) -> None:
        srv = replicas[i % 2]
        body = {"name": f"c{i}", "command": ["true"], "resources": {"gpu": sizes[i]}}
        with httpx.Client(base_url=srv.url, headers=srv.headers(), timeout=30) as c:
            for attempt in range(2):  # a client retry with the same key must not duplicate
                r = c.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": f"key-{i}"})
                assert r.status_code in (200, 201), r.text
                with lock:
                    assert accepted.setdefault(f"key-{i}", r.json()["id"]) == r.json()["id"]

    stop = threading.Event()
    errors: list[BaseException] = []
    peak = [0]

    def run_agent(agent: FakeAgent) -> None:
        started: dict[str, tuple[str, int]] = {}
        try:
            while not stop.is_set():
                agent.heartbeat()
                for attempt_id, (job_id, rank) in list(started.items()):  # finish last round's
                    agent.report(job_id, attempt_id, "exited", rank=rank, exit_code=0)
                    started.pop(attempt_id)
                peak[0] = max(peak[0], check_capacity(engine))
                a = agent.assignments(wait=0.3)
                for order in a["start"]:
                    if order["attempt_id"] not in started:
                        agent.report(order["job_id"], order["attempt_id"], "started", rank=order["rank"])
                        started[order["attempt_id"]] = (order["job_id"], order["rank"])
                for order in a["stop"]:
                    if order["attempt_id"] in started:
                        job_id, rank = started.pop(order["attempt_id"])
                        agent.report(job_id, order["attempt_id"], "killed", rank=rank, exit_code=-15)
                peak[0] = max(peak[0], check_capacity(engine))
        except BaseException as err:  # noqa: BLE001
            errors.append(err)

    threads = [threading.Thread(target=run_agent, args=(a,), daemon=True) for a in agents]
    for t in threads:
        t.start()
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(submit, range(JOBS)))
    assert len(accepted) == JOBS and len(set(accepted.values())) == JOBS

    # cancel a few while they are queued or running
    with httpx.Client(base_url=replicas[1].url, headers=replicas[1].headers(), timeout=30) as c:
        for job_id in list(accepted.values())[-10:]:
            assert c.post(f"/api/v1/jobs/{job_id}/cancel").status_code in (200, 409)

    deadline = time.monotonic() + 100
    final = {"succeeded", "failed", "cancelled"}
    with httpx.Client(base_url=replicas[0].url, headers=replicas[0].headers(), timeout=30) as c:
        while time.monotonic() < deadline and not errors:
            items = c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
            if len(items) == JOBS and all(j["status"] in final for j in items):
                break
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(10)
        assert not errors, errors
        items = c.get("/api/v1/jobs", params={"limit": 1000}).json()["items"]
    assert sorted(j["id"] for j in items) == sorted(accepted.values())
    statuses = [j["status"] for j in items]
    assert all(s in final for s in statuses), {s: statuses.count(s) for s in set(statuses)}
    assert statuses.count("succeeded") >= JOBS - 10 and "failed" not in statuses
    assert peak[0] > 0 and check_capacity(engine) == 0
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs")).scalar() == JOBS
        # never placed twice: one attempt per job that ran
        dup = conn.execute(text("SELECT job_id FROM attempts GROUP BY job_id HAVING count(*) > 1")).all()
        assert dup == []
        assert conn.execute(text("SELECT count(*) FROM attempts WHERE active")).scalar() == 0
    for a in agents:
        a.close()
