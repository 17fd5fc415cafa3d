"""A submit kicks the scheduling loop: on an idle pool the job is placed at once, not at the next
tick; while a backlog waits, kicks are ignored and the backlog is worked on the regular interval."""

from __future__ import annotations

import time

from controlplane.db.models import JobRow
from controlplane.loops.runner import Loops
from controlplane.settings import Settings
from tests.support.factories import make_job, make_node
from tests.support.waiting import wait_until


def _status(db, job_id: int) -> str:  # noqa: ANN001
    with db.read() as s:
        return s.get(JobRow, job_id).status


def test_a_kick_places_at_once_on_an_idle_pool_and_waits_for_the_tick_behind_a_backlog(db, tmp_path) -> None:  # noqa: ANN001
    make_node(db, "k1", gpus=1)
    loops = Loops(db, Settings(home=tmp_path, scheduler_interval_s=3600.0, scheduler_lease_s=7200.0))
    loops.start()
    try:
        wait_until(lambda: loops.is_leader and loops.cycles >= 1, 30, "the first cycle")
        first = make_job(db, "first", gpu=1)
        loops.kick()
        wait_until(lambda: _status(db, first) == "scheduled", 30, "the kicked cycle to place the job")
        assert loops.backlog == 0
        blocked = make_job(db, "blocked", gpu=1)  # the only GPU is taken
        loops.kick()
        wait_until(lambda: loops.backlog == 1, 30, "a cycle that leaves the job pending")
        cycles = loops.cycles
        make_node(db, "k2", gpus=1)
        later = make_job(db, "later", gpu=1)
        loops.kick()  # ignored: the backlog waits for the tick, an hour away
        time.sleep(1.0)
        assert loops.cycles == cycles and _status(db, later) == "pending" and _status(db, blocked) == "pending"
    finally:
        loops.stop()
