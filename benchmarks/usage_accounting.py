"""Per-job usage at scale: 1,000 nodes x 8 GPUs, every GPU held by one running job (PostgreSQL).

    .venv/bin/python benchmarks/usage_accounting.py [--nodes 1000] [--minutes 60] [--db sqlite]

Seeds a throwaway database (teams, queues, users, nodes, accelerators, running jobs with one
slice each), then, in-process, feeds ``--minutes`` minutes of heartbeats (6 a minute per node, each
carrying its 8 slices' use, as agents on a 10 s interval do) through ``usage_buffer.record`` (the
heartbeat's part) and ``usage_buffer.flush`` (the loops' part, once a minute); then rolls the hour
up to hourly rows (``usage_retention.roll_up``) and times the chargeback report (on minute rows,
then on hourly rows) and a job's usage. Prints one JSON line at the end: record cost per heartbeat, flush time per minute (p50,
max), rows written, downsampling time per hour and per step (one transaction), report and
job-usage times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import func, insert, select  # noqa: E402

from controlplane.core.requests import request_from_resources, request_to_json  # noqa: E402
from controlplane.core.wire import SliceUsage  # noqa: E402
from controlplane.db import migrate  # noqa: E402
from controlplane.db.database import Database  # noqa: E402
from controlplane.db.models import (AcceleratorRow, AttemptRow, JobRow, MemberRow, NodeRow,  # noqa: E402
                                    QueueRow, SliceRow, TeamRow, UserRow)
from controlplane.db.usage import JobUsageRow  # noqa: E402
from controlplane.loops import usage_retention  # noqa: E402
from controlplane.services import reports, usage, usage_buffer  # noqa: E402
from controlplane.services.principal import Principal  # noqa: E402
from controlplane.core.states import Role  # noqa: E402

GPUS = 8


def seed(db: Database, nodes: int, start: float) -> list[tuple[int, list[SliceUsage]]]:
    """Nodes, accelerators and one running one-GPU job per accelerator; returns each node's id
    with the slice usage its heartbeats carry."""
    with db.tx() as s:
        teams = [s.execute(insert(TeamRow).values(name=f"team-{t}", created_at=start).returning(TeamRow.id))
                 .scalar_one() for t in range(10)]
        queues = [(t, s.execute(insert(QueueRow).values(name="train", team_id=t, created_at=start)
                                .returning(QueueRow.id)).scalar_one()) for t in teams]
        users = [s.execute(insert(UserRow).values(name=f"user-{i}", team_id=t, role="member", created_at=start)
                           .returning(UserRow.id)).scalar_one() for i, t in enumerate(teams)]
        s.execute(insert(NodeRow), [dict(name=f"node-{i:04d}", address="10.0.0.1", state="ready", cordoned=False,
                                         cpu_milli=128000, memory_mib=2**20, labels={}, backend="nvml",
                                         agent_version="0.1.0", epoch=1, last_heartbeat_at=start,
                                         registered_at=start) for i in range(nodes)])
        node_ids = list(s.scalars(select(NodeRow.id).order_by(NodeRow.id)))
        s.execute(insert(AcceleratorRow), [dict(
            uuid=f"GPU-{n}-{g}", node_id=n, index=g, vendor="nvidia", model="H100-80GB" if n % 2 else "A100-80GB",
            memory_mib=81920, labels={}, healthy=True, allocated_milli=0, allocated_memory_mib=0)
            for n in node_ids for g in range(GPUS)])
        spec = {"kind": "custom", "name": "bench", "command": ["true"], "resources": {"gpu": 1}}
        request = request_to_json(request_from_resources(spec["resources"]))
        jobs = [dict(name=f"job-{n}-{g}", kind="custom", team_id=queues[i % 10][0], queue_id=queues[i % 10][1],
                     user_id=users[i % 10], status="running", priority=0, spec=spec, request=request,
                     attempt=1, max_attempts=1, created_at=start, started_at=start)
                for i, (n, g) in enumerate((n, g) for n in node_ids for g in range(GPUS))]
        job_ids = list(s.scalars(insert(JobRow).returning(JobRow.id), jobs))
        pairs = [(n, g) for n in node_ids for g in range(GPUS)]
        attempt_ids = list(s.scalars(insert(AttemptRow).returning(AttemptRow.id), [dict(
            job_id=j, number=1, active=True, master_node_id=n, master_addr="10.0.0.1", master_port=29500,
            created_at=start) for j, (n, _) in zip(job_ids, pairs)]))
        member_ids = list(s.scalars(insert(MemberRow).returning(MemberRow.id), [dict(
            attempt_id=a, job_id=j, rank=0, node_id=n, state="running", delivered=True)
            for a, j, (n, _) in zip(attempt_ids, job_ids, pairs)]))
        s.execute(insert(SliceRow), [dict(member_id=m, accelerator_uuid=f"GPU-{n}-{g}", compute_milli=1000,
                                          memory_mib=81920, allocated_at=start)
                                     for m, (n, g) in zip(member_ids, pairs)])
    usage_of: dict[int, list[SliceUsage]] = {n: [] for n in node_ids}
    for j, a, (n, g) in zip(job_ids, attempt_ids, pairs):
        usage_of[n].append(SliceUsage(job_id=str(j), attempt_id=str(a), accelerator_uuid=f"GPU-{n}-{g}",
                                      memory_used_mib=20000.0 + 10 * g, sm_util_pct=10.0 * g))
    return list(usage_of.items())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--nodes", type=int, default=1000)
    p.add_argument("--minutes", type=int, default=60)
    p.add_argument("--db", choices=["postgresql", "sqlite"], default="postgresql")
    args = p.parse_args()
    from tests.support.db import database

    with tempfile.TemporaryDirectory() as tmp, database(args.db, Path(tmp)) as url:
        migrate.upgrade(url)
        db = Database(url)
        start = (time.time() // 3600 - 2 - (args.minutes + 59) // 60) * 3600  # whole hours, in the past
        t0 = time.perf_counter()
        nodes = seed(db, args.nodes, start)
        print(f"seeded {args.nodes} nodes x {GPUS} GPUs in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        record_s, flush_ms, written = 0.0, [], 0
        beats = 0
        for minute in range(args.minutes):
            for k in range(6):  # a heartbeat every 10 s from every node
                ts = start + 60 * minute + 10 * k + 1
                t = time.perf_counter()
                for node_id, slices in nodes:
                    usage_buffer.record(db, node_id, slices, ts)
                record_s += time.perf_counter() - t
                beats += len(nodes)
            t = time.perf_counter()
            written += usage_buffer.flush(db, start + 60 * (minute + 1), 60)
            flush_ms.append((time.perf_counter() - t) * 1000)
            if minute % 10 == 9:
                print(f"minute {minute + 1}: flush {flush_ms[-1]:.0f} ms", file=sys.stderr)
        end = start + 60 * args.minutes
        admin = Principal(Role.ADMIN, 0, user_id=0, user="bench")

        def timed(label: str, fn) -> None:  # noqa: ANN001
            t = time.perf_counter()
            fn()
            timings[label] = round((time.perf_counter() - t) * 1000, 1)

        timings: dict[str, float] = {}
        for by in ("team", "model"):
            timed(f"report_by_{by}_minutes_ms", lambda: reports.usage_report(db, admin, start, end, by, now=end))
        timed("job_usage_ms", lambda: usage.job_usage(db, admin, "1"))
        t = time.perf_counter()
        steps = usage_retention.roll_up(db, end + 3600, budget_s=3600)
        rollup_ms = (time.perf_counter() - t) * 1000
        hours = -(-args.minutes // 60)
        timed("report_by_team_hours_ms", lambda: reports.usage_report(db, admin, start, end, "team", now=end))
        with db.read() as s:
            rows_after = s.scalar(select(func.count()).select_from(JobUsageRow))
        db.dispose()
    out = {"db": args.db, "nodes": args.nodes, "gpus": args.nodes * GPUS, "minutes": args.minutes,
           "record_us_per_heartbeat": round(record_s / beats * 1e6, 1),
           "flush_ms_p50": round(statistics.median(flush_ms), 1), "flush_ms_max": round(max(flush_ms), 1),
           "rows_written": written, "hours_rolled_up": hours, "rollup_steps": steps,
           "rollup_ms_per_hour": round(rollup_ms / max(1, hours), 1),
           "rollup_ms_per_step": round(rollup_ms / max(1, steps), 1), "rows_with_hours": rows_after,
           **timings}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
