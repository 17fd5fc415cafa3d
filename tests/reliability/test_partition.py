"""An agent cut off from the control plane beyond the node loss timeout: its job is requeued
elsewhere, and the old copy is stopped by its own agent (fencing) before the new copy starts;
when the network heals, the node takes work again only once no stale copy runs there."""

from __future__ import annotations

import pytest

from tests.integration.e2e_agent_support import AgentProc, Api, wait_until
from tests.reliability.support import CuttableProxy
from tests.support.db import database
from tests.support.server import start_server

LOSS_TIMEOUT_S = 6

JOB = """
import os, signal, sys, time
path, node = {path!r}, os.environ['GPUPOOL_NODE']
def note(what):
    with open(path, 'a') as fh:
        fh.write(f'{{what}} {{node}} {{time.time()}}\\n')
def term(*_):
    note('stopping')
    time.sleep(1.0)  # a checkpoint takes a while
    note('stopped')
    sys.exit(143)
signal.signal(signal.SIGTERM, term)
note('started')
while True:
    time.sleep(0.1)
"""


def _events(path) -> list[tuple[str, str, float]]:  # noqa: ANN001
    if not path.exists():
        return []
    return [(w, n, float(t)) for w, n, t in (line.split() for line in path.read_text().splitlines())]


@pytest.mark.timeout(300)
def test_a_partitioned_agent_fences_its_job_before_the_copy_starts(tmp_path) -> None:  # noqa: ANN001
    with database("sqlite", tmp_path) as url:
        server = start_server(url, env={"GPUPOOL_HEARTBEAT_TIMEOUT_S": str(LOSS_TIMEOUT_S)}, home=tmp_path / "h")
        proxy = CuttableProxy(int(server.url.rsplit(":", 1)[1]))
        cut_off = AgentProc(proxy.url, server.bootstrap_token, tmp_path, "far", heartbeat_s=1.0).start()
        rescue = AgentProc(server.url, server.bootstrap_token, tmp_path, "near", heartbeat_s=1.0)
        api = Api(server.url, server.admin_token)
        notes = tmp_path / "notes.txt"
        try:
            cut_off.wait_connected(60)
            job = api.submit({"name": "fenced", "command": ["python", "-c", JOB.format(path=str(notes))],
                              "resources": {"gpu": 1, "cpu_milli": 100, "memory_mib": 64}, "grace_s": 3})
            wait_until(lambda: ("started", "far") in [(w, n) for w, n, _ in _events(notes)], 60, "job on far")
            rescue.start().wait_connected(60)
            proxy.cut()  # the far node can no longer reach the control plane, nor be reached
            wait_until(lambda: ("started", "near") in [(w, n) for w, n, _ in _events(notes)], 120,
                       "the requeued copy on the near node")
            seen = _events(notes)
            stopped_far = [t for w, n, t in seen if (w, n) == ("stopped", "far")]
            started_near = [t for w, n, t in seen if (w, n) == ("started", "near")]
            assert stopped_far and stopped_far[0] <= started_near[0], seen  # fenced before the copy ran
            cut_at = [t for w, n, t in seen if (w, n) == ("started", "far")][0]
            print(f"partition: old copy stopped {stopped_far[0] - cut_at:.1f} s after it started, the new one "
                  f"started {started_near[0] - stopped_far[0]:.1f} s after that")
            assert cut_off.health().get("fenced") is True
            running = api.job(job["id"])
            assert running["attempt"] == 2 and running["placement"][0]["node"] == "near"
            kinds = [e["kind"] for e in api.events(job["id"])]
            assert "lost" in kinds and "requeued" in kinds
            proxy.heal()  # the far node comes back, with no stale copy: it is ready again
            wait_until(lambda: api.http.get("/api/v1/nodes/far").json()["state"] == "ready", 60,
                       "the far node ready again")
            assert not cut_off.job_alive(job["id"])
            api.cancel(job["id"])
        finally:
            for agent in (cut_off, rescue):
                agent.stop()
                agent.reap_jobs()
            proxy.close()
            server.stop()
