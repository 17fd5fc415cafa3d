"""Dashboard page render times at scale: 1,000 nodes x 8 GPUs and 10,000 jobs in PostgreSQL.

    .venv/bin/python benchmarks/dashboard_pages.py [--nodes 1000] [--jobs 10000] [--runs 15]

Seeds a throwaway PostgreSQL database (bulk inserts: teams, queues, nodes, accelerators with
telemetry, running jobs holding slices, pending jobs with reasons, events, an hour of history),
then requests every dashboard page in-process (the app from create_app, loops off) as the admin
and measures server time per request (wall clock around the in-process request).
Target: Overview and Jobs <= 300 ms at p90; p50 and max are reported too.
Prints one JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert, select, text  # noqa: E402

from controlplane.db.models import (AcceleratorRow, AttemptRow, EventRow, JobRow, MemberRow,  # noqa: E402
                                    NodeRow, QueueRow, SampleRow, SliceRow, TeamRow,
                                    UserRow)
from controlplane.history import UsageSampleRow  # noqa: E402

TARGET_MS = 300.0
PAGES = ["/", "/jobs", "/jobs?status=pending", "/jobs/1", "/nodes", "/nodes?page=20",
         "/nodes/gpu-node-0500", "/queues", "/events", "/metrics"]


def seed(db, nodes: int, gpus: int, jobs: int, rng: random.Random) -> dict:  # noqa: ANN001
    now = time.time()
    with db.tx() as s:
        team_ids = []
        for t in range(10):
            team_ids.append(s.execute(insert(TeamRow).values(name=f"team-{t}", created_at=now)
                                      .returning(TeamRow.id)).scalar_one())
        queue_ids = []
        for t, tid in enumerate(team_ids):
            for q in ("default", "train", "serve"):
                queue_ids.append((tid, s.execute(insert(QueueRow).values(
                    name=q, team_id=tid, guarantee_milli=rng.choice([0, 8000, 32000, 64000]),
                    limit_milli=rng.choice([None, 128000, 256000]), weight=1.0, created_at=now)
                    .returning(QueueRow.id)).scalar_one()))
        user_ids = [s.execute(insert(UserRow).values(name=f"user-{t}", team_id=tid, role="member",
                                                      created_at=now).returning(UserRow.id)).scalar_one()
                    for t, tid in enumerate(team_ids)]
        s.execute(insert(NodeRow), [dict(
            name=f"gpu-node-{i:04d}", address=f"10.0.{i // 250}.{i % 250}", state="ready",
            cordoned=False, cpu_milli=128000, memory_mib=1024 * 1024, labels={"zone": f"z{i % 4}"},
            backend="nvml", agent_version="0.1.0", epoch=1, last_heartbeat_at=now - rng.random() * 10,
            registered_at=now) for i in range(nodes)])
        node_ids = list(s.scalars(select(NodeRow.id).order_by(NodeRow.id)))
        models = [("H100-80GB", 81559), ("A100-80GB", 81920), ("L40S-48GB", 46068)]
        accs, samples = [], []
        for n, nid in enumerate(node_ids):
            model, mem = models[n % len(models)]
            for g in range(gpus):
                util = rng.uniform(0, 100)
                uuid = f"GPU-{n:04d}-{g}"
                accs.append(dict(uuid=uuid, node_id=nid, index=g, vendor="nvidia", model=model,
                                 memory_mib=mem, labels={}, healthy=True, allocated_milli=0,
                                 allocated_memory_mib=0, unmanaged_memory_mib=0))
                healthy = rng.random() > 0.002
                samples.append(dict(uuid=uuid, node_id=nid, ts=now, healthy=healthy, gpu_util_pct=util,
                                    unmanaged_memory_mib=0, telemetry={
                                        "uuid": uuid, "ts": now, "gpu_util_pct": util,
                                        "memory_used_mib": mem * util / 200, "power_w": 300.0,
                                        "temperature_c": 55.0, "healthy": healthy}))
        s.execute(insert(AcceleratorRow), accs)
        s.execute(insert(SampleRow), samples)
        running = min(jobs // 3, len(accs))
        job_rows = []
        for j in range(jobs):
            tid, qid = queue_ids[j % len(queue_ids)]
            is_running = j < running
            gpu = rng.choice([0.25, 0.5, 1])
            job_rows.append(dict(
                name=f"job-{j}", kind="custom", team_id=tid, queue_id=qid,
                user_id=user_ids[team_ids.index(tid)],
                status="running" if is_running else ("pending" if j % 3 else "succeeded"),
                priority=0, spec={"name": f"job-{j}", "command": ["sleep", "1"], "resources": {"gpu": gpu}},
                request={"gpu": gpu, "gpu_memory_mib": 0, "cpu_milli": 0, "memory_mib": 0, "nodes": 1},
                pending_reason=None if is_running or j % 3 == 0 else {
                    "code": rng.choice(["quota", "capacity", "constraints"]),
                    "message": "queue team-x/train is at its limit of 128 GPUs", "details": {}},
                attempt=1 if is_running else 0, max_attempts=1, created_at=now - (jobs - j),
                started_at=now if is_running else None))
        s.execute(insert(JobRow), job_rows)
        run_ids = list(s.scalars(select(JobRow.id).where(JobRow.status == "running").order_by(JobRow.id)))
        s.execute(insert(AttemptRow), [dict(
            job_id=jid, number=1, active=True, master_node_id=node_ids[(k % len(accs)) // gpus],
            master_addr="10.0.0.1", master_port=29500, placement=[], created_at=now)
            for k, jid in enumerate(run_ids)])
        attempts = dict(s.execute(select(AttemptRow.job_id, AttemptRow.id)).all())
        s.execute(insert(MemberRow), [dict(
            attempt_id=attempts[jid], job_id=jid, rank=0, node_id=node_ids[(k % len(accs)) // gpus],
            cpu_milli=1000, memory_mib=4096, state="running") for k, jid in enumerate(run_ids)])
        members = dict(s.execute(select(MemberRow.job_id, MemberRow.id)).all())
        s.execute(insert(SliceRow), [dict(
            member_id=members[jid], accelerator_uuid=accs[k % len(accs)]["uuid"], compute_milli=250,
            memory_mib=8192) for k, jid in enumerate(run_ids)])
        s.execute(insert(EventRow), [dict(
            ts=now - i, kind=rng.choice(["submitted", "scheduled", "running", "succeeded"]),
            object_type="job", object_id=str(i + 1), job_id=i + 1, team_id=team_ids[i % 10],
            actor="system", reason="seeded") for i in range(min(jobs, 20000))])
        history = []
        for minute in range(60):
            ts = float(int(now // 60 - minute) * 60)
            history.append(dict(ts=ts, scope="cluster", key="all", capacity_milli=len(accs) * 1000,
                                allocated_milli=running * 250, used_milli=len(accs) * 400,
                                pending_jobs=jobs // 2, running_jobs=running))
            for tid, qid in queue_ids:
                history.append(dict(ts=ts, scope="queue", key=f"team-{team_ids.index(tid)}/q{qid}",
                                    capacity_milli=8000, allocated_milli=4000, used_milli=None,
                                    pending_jobs=10, running_jobs=5))
        s.execute(insert(UsageSampleRow), history)
    with db.engine.connect() as conn:  # as autovacuum would after a bulk load
        conn.execute(text("ANALYZE"))
        conn.commit()
    return {"accelerators": len(accs), "running": running}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    from fastapi.testclient import TestClient

    from controlplane.db.database import Database
    from controlplane.server import create_app
    from controlplane.settings import Settings
    from tests.support.db import postgres_database
    from tests.support.dashboard import sign_in

    rng = random.Random(7)
    with postgres_database("gpupool_bench_dash") as url:
        settings = Settings(database_url=url, admin_token="gpa_bench_admin", run_loops=False)
        app = create_app(settings)
        t0 = time.perf_counter()
        info = seed(Database(url), args.nodes, args.gpus, args.jobs, rng)
        seed_s = time.perf_counter() - t0
        print(f"seeded {args.nodes} nodes, {info['accelerators']} GPUs, {args.jobs} jobs "
              f"({info['running']} running) in {seed_s:.1f}s", file=sys.stderr)
        results = {}
        with TestClient(app) as client:
            assert sign_in(client, "gpa_bench_admin").status_code == 303
            for path in PAGES:
                r = client.get(path)
                assert r.status_code == 200, (path, r.status_code, r.text[:500])
                times = []
                for _ in range(args.runs):
                    t = time.perf_counter()
                    r = client.get(path)
                    times.append((time.perf_counter() - t) * 1000)
                    assert r.status_code == 200
                times.sort()
                results[path] = {"p50_ms": round(statistics.median(times), 1),
                                 "p90_ms": round(times[int(0.9 * (len(times) - 1))], 1),
                                 "max_ms": round(times[-1], 1)}
                r = results[path]
                print(f"{path:24s} p50 {r['p50_ms']:7.1f} ms  p90 {r['p90_ms']:7.1f} ms  max {r['max_ms']:7.1f} ms",
                      file=sys.stderr)
        app.state.db.dispose()
    # p90, not max: on a shared 2-core box single runs can wait for a CPU behind other work
    ok = all(results[p]["p90_ms"] <= TARGET_MS for p in ("/", "/jobs"))
    print(json.dumps({"db": "postgresql", "nodes": args.nodes, "gpus": info["accelerators"],
                      "jobs": args.jobs, "runs": args.runs, "pages": results,
                      "target_ms": TARGET_MS, "overview_and_jobs_p90_within_target": ok,
                      "load_avg_1m": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
