"""Jobs that print NUL bytes and invalid UTF-8, and one that prints 1 GB, on the same node as a
quiet job: the quiet job's logs keep arriving whole, the server's memory stays bounded, the flood
is kept within the cap, and a tail of it answers fast (it reads only the newest chunks)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import httpx
import pytest

from tests.integration.e2e_agent_support import AgentProc, Api, wait_until
from tests.support.db import database
from tests.support.server import start_server

STEADY_LINES = 150
STEADY = "import time\nfor i in range({n}):\n    print('line', i, flush=True)\n    time.sleep(0.2)\n"
HOSTILE = ("import sys, time\nfor i in range(100):\n    sys.stdout.buffer.write(b'nul\\x00here bad\\xff\\xfe end\\n')\n"
           "    sys.stdout.flush()\n    time.sleep(0.02)\n")
FLOOD = "head -c 1073741824 /dev/zero | tr '\\0' 'x' | fold -w 99; echo; echo the-end"  # 1 GiB, 100-byte lines
LOG_CAP = 16 * 1024 * 1024


def _rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.timeout(600)
def test_nul_invalid_text_and_a_1_gb_flood_do_not_hurt_other_jobs(tmp_path) -> None:  # noqa: ANN001
    with database("postgresql", tmp_path) as url:
        server = start_server(url, env={"GPUPOOL_LOG_MAX_BYTES": str(LOG_CAP)}, home=tmp_path / "h")
        agent = AgentProc(server.url, server.bootstrap_token, tmp_path, "loud", gpus="1x4xH100-80GB").start()
        api = Api(server.url, server.admin_token)
        try:
            agent.wait_connected(60)
            res = {"gpu": 1, "cpu_milli": 100, "memory_mib": 64}
            steady = api.submit({"name": "steady", "resources": res,
                                 "command": ["python", "-c", STEADY.format(n=STEADY_LINES)]})
            hostile = api.submit({"name": "hostile", "resources": res, "command": ["python", "-c", HOSTILE]})
            flood = api.submit({"name": "flood", "resources": res, "command": ["bash", "-c", FLOOD]})
            rss = []
            final = ("succeeded", "failed", "cancelled")
            while api.job(flood["id"])["status"] not in final or api.job(steady["id"])["status"] not in final:
                rss.append(_rss_mib(server.process.pid))
                time.sleep(0.5)
            for job in (steady, hostile, flood):
                assert api.job(job["id"])["status"] == "succeeded", api.job(job["id"])
            numbers = wait_until(lambda: (n := [int(x.split()[1]) for x in api.logs(steady["id"]).splitlines()
                                                if x.startswith("line ")]) == list(range(STEADY_LINES)) and n,
                                 120, "every line of the quiet job")
            assert numbers == list(range(STEADY_LINES))
            assert "nul\ufffdhere bad\ufffd\ufffd end" in api.logs(hostile["id"])
            # the flood: its stored log keeps the head and the newest output within the cap
            full = wait_until(lambda: (t := api.http.get(f"/api/v1/jobs/{flood['id']}/logs", timeout=60).text)
                              .endswith("\nthe-end\n") and "not kept (log cap)" in t and t, 180, "the flood's tail")
            assert len(full.encode()) <= LOG_CAP + 4096
            assert max(rss) < 800, f"server RSS peaked at {max(rss):.0f} MiB"
            timings = []
            with httpx.Client(base_url=server.url, headers=server.headers(), timeout=30) as c:
                for _ in range(7):
                    started = time.perf_counter()
                    tail = c.get(f"/api/v1/jobs/{flood['id']}/logs", params={"tail": 100})
                    timings.append(time.perf_counter() - started)
                    assert tail.status_code == 200 and len(tail.text.splitlines()) == 100
            print(f"tail of a capped 1 GiB log: median {statistics.median(timings) * 1000:.0f} ms, "
                  f"server RSS peak {max(rss):.0f} MiB")
            assert statistics.median(timings) < 0.2
        finally:
            agent.stop()
            agent.reap_jobs()
            server.stop()
