"""Agent traffic has its own thread pool: with every user thread stuck on a blocked read, node
heartbeats are still answered (so slow reads can never get a node declared lost)."""

from __future__ import annotations

import threading
import time

import httpx
import psycopg
import pytest

from tests.support.db import database
from tests.support.fake_agent import FakeAgent
from tests.support.server import start_server
from tests.support.waiting import wait_until


@pytest.mark.postgres
def test_heartbeats_are_served_while_user_reads_are_stuck(tmp_path) -> None:  # noqa: ANN001
    with database("postgresql", tmp_path) as url, start_server(url, env={"GPUPOOL_THREADS": "2"}, home=tmp_path) as srv:
        agent = FakeAgent(srv.url, srv.bootstrap_token, "pool-node", gpus=1)
        agent.register()
        dsn = url.replace("postgresql+psycopg://", "postgresql://")
        with srv.client() as c:  # a job, so listing jobs has a row to lock
            c.post("/api/v1/jobs", json={"name": "j", "command": ["true"], "resources": {"gpu": 0.1}})
        blocker = psycopg.connect(dsn)
        blocker.execute("LOCK TABLE jobs IN ACCESS EXCLUSIVE MODE")  # every read of jobs now waits
        stuck = [threading.Thread(target=lambda: httpx.get(f"{srv.url}/api/v1/jobs", headers=srv.headers(),
                                                           timeout=60), daemon=True) for _ in range(6)]
        for t in stuck:
            t.start()
        # wait until both user threads are stuck on the lock (the heartbeat must not need them)
        with psycopg.connect(dsn, autocommit=True) as watcher:
            wait_until(lambda: watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()").fetchone()[0] >= 2, 30, "two reads stuck on the lock")
        try:
            started = time.monotonic()
            r = agent.heartbeat()
            assert r.status_code == 200 and time.monotonic() - started < 10
        finally:
            blocker.rollback()  # releases the lock; the stuck reads finish
            blocker.close()
        for t in stuck:
            t.join(30)
        agent.close()
