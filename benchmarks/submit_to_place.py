"""Submit-to-placement latency on an idle pool: a submit wakes the scheduler at once.

    python benchmarks/submit_to_place.py                 # SQLite, 30 jobs, scheduler interval 2 s
    python benchmarks/submit_to_place.py --db postgresql --jobs 50

Starts a server (default 2 s scheduling interval, so a job that waited for the tick would take up
to 2 s) with one fake node, submits jobs one at a time on the idle pool and measures, from the
job's own events, the time from "submitted" to "scheduled". Target: p99 <= 100 ms.
Prints one JSON line last: {"db", "jobs", "interval_s", "p50_ms", "p99_ms", "max_ms"}.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.db import database  # noqa: E402
from tests.support.fake_agent import FakeAgent  # noqa: E402
from tests.support.server import start_server  # noqa: E402


def _ts(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--jobs", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0, help="scheduler interval (s)")
    args = parser.parse_args()
    latencies = []
    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        env = {"GPUPOOL_SCHEDULER_INTERVAL_S": str(args.interval), "GPUPOOL_LOG_LEVEL": "warning"}
        with start_server(url, env=env, home=Path(tmp) / "home") as srv, srv.client() as c:
            agent = FakeAgent(srv.url, srv.bootstrap_token, "bench-node", gpus=1)
            agent.register()
            for i in range(args.jobs):
                time.sleep(args.interval / 2)  # let the pool go idle between jobs
                job = c.post("/api/v1/jobs", json={"name": f"b{i}", "command": ["true"],
                                                   "resources": {"gpu": 0.001}}).json()
                deadline = time.monotonic() + 10 * args.interval
                while time.monotonic() < deadline:
                    kinds = {e["kind"]: e["ts"] for e in c.get(f"/api/v1/jobs/{job['id']}/events").json()["items"]}
                    if "scheduled" in kinds:
                        latencies.append((_ts(kinds["scheduled"]) - _ts(kinds["submitted"])) * 1000)
                        break
                    time.sleep(0.02)
                c.post(f"/api/v1/jobs/{job['id']}/cancel")
                agent.heartbeat()
                agent.step()
                print(f"job {i + 1}/{args.jobs}: {latencies[-1]:.1f} ms", file=sys.stderr)
            agent.close()
    latencies.sort()
    pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))], 1)  # noqa: E731
    print(json.dumps({"db": args.db, "jobs": len(latencies), "interval_s": args.interval,
                      "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(latencies[-1], 1)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
