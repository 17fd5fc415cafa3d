"""Migration 0003 on a database with history: requests stored whole, placements moved into slice
rows, live counters untouched; a database stamped with the renamed revision f001 upgrades."""

from __future__ import annotations

import json

from alembic import command
from sqlalchemy import text

from controlplane.core.requests import request_from_json
from controlplane.core.resources import Constraints, Request
from controlplane.db import migrate
from controlplane.db.base import make_engine

SPEC = {"kind": "custom", "name": "old", "command": ["true"], "min_runtime_s": 60, "preemptible": False,
        "resources": {"gpu": 0.5, "nodes": 2, "models": ["H100-80GB"], "cpu_milli": 500, "memory_mib": 64}}


def _seed_0002(url: str) -> None:
    """A pool at revision 0002: one finished attempt (slices deleted) and one live attempt."""
    command.upgrade(migrate.alembic_config(url), "0002")
    engine = make_engine(url, pool_size=1)
    with engine.begin() as c:
        run = c.execute
        run(text("INSERT INTO teams (id, name, created_at) VALUES (1, 'default', 0)"))
        run(text("INSERT INTO queues (id, name, team_id, guarantee_milli, weight, created_at) "
                 "VALUES (1, 'default', 1, 0, 1, 0)"))
        run(text("INSERT INTO users (id, name, team_id, role, created_at) VALUES (1, 'admin', 1, 'admin', 0)"))
        run(text("INSERT INTO nodes (id, name, address, state, cordoned, cpu_milli, memory_mib, labels, "
                 "backend, agent_version, epoch, last_heartbeat_at, registered_at) VALUES "
                 "(1, 'n1', '127.0.0.1', 'ready', false, 1000, 1000, '{}', 'sim', 't', 1, 0, 0)"))
        run(text("INSERT INTO accelerators (uuid, node_id, \"index\", vendor, model, product_name, memory_mib, "
                 "labels, healthy, allocated_milli, allocated_memory_mib, unmanaged_memory_mib) VALUES "
                 "('G0', 1, 0, 'nvidia', 'H100-80GB', '', 1000, '{}', true, 0, 0, 0)"))
        for job_id, status in ((1, "succeeded"), (2, "running")):
            run(text("INSERT INTO jobs (id, name, kind, team_id, queue_id, user_id, status, priority, spec, "
                     "request, attempt, max_attempts, created_at) VALUES (:id, 'old', 'custom', 1, 1, 1, "
                     ":st, 0, :spec, :req, 1, 3, 0)"),
                {"id": job_id, "st": status, "spec": json.dumps(SPEC), "req": json.dumps({"gpu": 0.5, "nodes": 2})})
            placement = [{"rank": 0, "node": "n1", "cpu_milli": 500, "memory_mib": 64,
                          "slices": [{"accelerator_uuid": "G0", "compute_milli": 500, "memory_mib": 400}]}]
            run(text("INSERT INTO attempts (id, job_id, number, active, master_node_id, master_addr, master_port, "
                     "placement, created_at, finished_at) VALUES (:id, :id, 1, :active, 1, '127.0.0.1', 29500, "
                     ":p, 10, :fin)"),
                {"id": job_id, "active": status == "running", "p": json.dumps(placement),
                 "fin": 20.0 if status == "succeeded" else None})
            run(text("INSERT INTO attempt_members (id, attempt_id, job_id, rank, node_id, cpu_milli, memory_mib, "
                     "state, delivered) VALUES (:id, :id, :id, 0, 1, 500, 64, :st, true)"),
                {"id": job_id, "st": "exited" if status == "succeeded" else "running"})
        run(text("INSERT INTO slices (member_id, accelerator_uuid, compute_milli, memory_mib) "
                 "VALUES (2, 'G0', 500, 400)"))  # the live attempt's slice (the old trigger counts it)
    engine.dispose()


def test_0003_moves_placements_and_keeps_counters(db_url) -> None:  # noqa: ANN001
    _seed_0002(db_url)
    assert migrate.upgrade(db_url) == migrate.head_revision()
    engine = make_engine(db_url, pool_size=1)
    try:
        with engine.connect() as c:
            jobs = {r[0]: r[1:] for r in c.execute(text("SELECT id, request, min_runtime_s, preemptible FROM jobs"))}
            slices = c.execute(text("SELECT member_id, compute_milli, memory_mib, allocated_at, released_at "
                                    "FROM slices ORDER BY member_id")).all()
            counters = c.execute(text("SELECT allocated_milli, allocated_memory_mib FROM accelerators")).one()
        request, min_runtime, preemptible = jobs[1]
        request = json.loads(request) if isinstance(request, str) else request
        assert request_from_json(request) == Request(cpu_milli=500, memory_mib=64, gpu_milli=500, gang=2,
                                                     constraints=Constraints(models=("H100-80GB",)))
        assert (min_runtime, bool(preemptible)) == (60, False)
        assert [tuple(r) for r in slices] == [(1, 500, 400, 10, 20), (2, 500, 400, 10, None)]
        assert tuple(counters) == (500, 400)  # only the live slice counts
    finally:
        engine.dispose()


def test_a_database_at_the_renamed_revision_upgrades(db_url) -> None:  # noqa: ANN001
    command.upgrade(migrate.alembic_config(db_url), "0001a")
    engine = make_engine(db_url, pool_size=1)
    try:
        with engine.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = 'f001'"))
        assert migrate.upgrade(db_url) == migrate.head_revision()
        assert migrate.is_current(engine)
    finally:
        engine.dispose()
