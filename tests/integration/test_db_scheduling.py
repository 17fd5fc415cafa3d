"""A scheduling cycle on a real database: places what fits, explains the rest, and survives a
stored spec this version cannot read."""

from __future__ import annotations

from sqlalchemy import select, update

from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.db.models import JobRow
from controlplane.loops.runner import Loops
from controlplane.settings import Settings
from tests.support.factories import make_job, make_node


def test_cycle_places_explains_and_skips_unreadable_requests(db_url, tmp_path) -> None:  # noqa: ANN001
    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        make_node(db, "s1", gpus=1, memory_mib=1000)
        good = make_job(db, "good", 0.5)
        too_big = make_job(db, "too-big", 4)
        broken = make_job(db, "broken", 0.25)
        with db.tx() as s:
            s.execute(update(JobRow).where(JobRow.id == broken).values(request={"from": "the-future"}))
        loops = Loops(db, Settings(home=tmp_path, run_loops=False))
        result = loops.cycle()
        assert result["placed"] == 1
        with db.read() as s:
            jobs = {j.id: j for j in s.scalars(select(JobRow))}
        assert jobs[good].status == "scheduled" and jobs[good].pending_reason is None
        assert jobs[too_big].status == "pending" and jobs[too_big].pending_reason["code"]
        assert jobs[broken].status == "pending"
        assert jobs[broken].pending_reason["code"] == "invalid"
        assert jobs[broken].pending_reason["unschedulable"] is True
        assert loops.cycle()["placed"] == 0  # steady state: nothing new
    finally:
        db.dispose()


def test_retention_keeps_only_recent_status_seqs(db_url) -> None:  # noqa: ANN001
    from controlplane.db.models import StatusSeenRow
    from controlplane.loops.retention import trim_status_seen

    migrate.upgrade(db_url)
    db = Database(db_url)
    try:
        with db.tx() as s:
            s.add_all([StatusSeenRow(node_id=n, seq=q) for n in (1, 2) for q in range(1, 31)])
        assert trim_status_seen(db, keep=10) == 2 * 19
        with db.read() as s:
            left = sorted((r.node_id, r.seq) for r in s.scalars(select(StatusSeenRow)))
        assert left == [(n, q) for n in (1, 2) for q in range(20, 31)]
    finally:
        db.dispose()
