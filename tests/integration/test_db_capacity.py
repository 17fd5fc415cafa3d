"""The database itself refuses over-committed accelerators, even when Python checks are bypassed."""

from __future__ import annotations

import threading

import pytest
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError, InternalError, OperationalError, ProgrammingError

from controlplane.core.resources import SliceGrant
from controlplane.core.snapshot import Decision, MemberPlacement, Placement
from controlplane.db.database import Database
from controlplane.services.scheduling import SchedulingService
from tests.support.factories import make_job, make_member, make_node

INSERT = text("INSERT INTO slices (member_id, accelerator_uuid, compute_milli, memory_mib) "
              "VALUES (:m, :u, :c, :mem)")


def _counters(db: Database, uuid: str) -> tuple[int, int]:
    with db.engine.connect() as c:
        return tuple(c.execute(text("SELECT allocated_milli, allocated_memory_mib FROM accelerators "
                                    "WHERE uuid = :u"), {"u": uuid}).one())


def test_raw_slice_inserts_cannot_exceed_compute_or_memory(db) -> None:  # noqa: ANN001
    (gpu,) = make_node(db, "n1", gpus=1, memory_mib=1000)
    member = make_member(db, make_job(db), "n1")
    with db.engine.begin() as c:
        c.execute(INSERT, {"m": member, "u": gpu, "c": 600, "mem": 400})
    assert _counters(db, gpu) == (600, 400)
    with pytest.raises(IntegrityError), db.engine.begin() as c:
        c.execute(INSERT, {"m": member, "u": gpu, "c": 500, "mem": 100})  # 1100 milli
    with pytest.raises(IntegrityError), db.engine.begin() as c:
        c.execute(INSERT, {"m": member, "u": gpu, "c": 100, "mem": 700})  # 1100 MiB
    with pytest.raises(IntegrityError), db.engine.begin() as c:
        c.execute(INSERT, {"m": member, "u": gpu, "c": -5, "mem": 0})
    assert _counters(db, gpu) == (600, 400)  # nothing half-written
    with db.engine.begin() as c:
        c.execute(INSERT, {"m": member, "u": gpu, "c": 400, "mem": 600})  # exactly full is fine
    assert _counters(db, gpu) == (1000, 1000)
    with db.engine.begin() as c:  # released slices stay as history and stop counting
        c.execute(text("UPDATE slices SET released_at = 1 WHERE member_id = :m AND compute_milli = 600"),
                  {"m": member})
    assert _counters(db, gpu) == (400, 600)
    with db.engine.begin() as c:  # deleting a released slice changes nothing; a live one frees it
        c.execute(text("DELETE FROM slices WHERE member_id = :m"), {"m": member})
    assert _counters(db, gpu) == (0, 0)


def test_counters_cannot_be_forced_past_the_device(db) -> None:  # noqa: ANN001
    (gpu,) = make_node(db, "n1", gpus=1, memory_mib=1000)
    for stmt in ("UPDATE accelerators SET allocated_milli = 1001",
                 "UPDATE accelerators SET allocated_milli = -1",
                 "UPDATE accelerators SET allocated_memory_mib = 1001"):
        with pytest.raises(IntegrityError), db.engine.begin() as c:
            c.execute(text(stmt))
    member = make_member(db, make_job(db), "n1")
    with db.engine.begin() as c:
        c.execute(INSERT, {"m": member, "u": gpu, "c": 300, "mem": 300})
    for stmt in ("UPDATE slices SET compute_milli = 999",  # a slice can only be released, once
                 "UPDATE slices SET released_at = 5, memory_mib = 1"):
        with pytest.raises((IntegrityError, OperationalError, InternalError, ProgrammingError)), \
                db.engine.begin() as c:
            c.execute(text(stmt))
    assert _counters(db, gpu) == (300, 300)
    with db.engine.begin() as c:
        c.execute(text("UPDATE slices SET released_at = 5"))
    with pytest.raises((IntegrityError, OperationalError, InternalError, ProgrammingError)), db.engine.begin() as c:
        c.execute(text("UPDATE slices SET released_at = NULL"))  # released is final
    assert _counters(db, gpu) == (0, 0)


def test_concurrent_writers_cannot_double_book(db) -> None:  # noqa: ANN001
    (gpu,) = make_node(db, "n1", gpus=1, memory_mib=1000)
    members = [make_member(db, make_job(db, f"j{i}"), "n1") for i in range(8)]
    barrier = threading.Barrier(len(members))
    outcomes: list[str] = []

    def grab(member: int) -> None:
        barrier.wait()
        try:
            with db.engine.begin() as c:
                c.execute(INSERT, {"m": member, "u": gpu, "c": 300, "mem": 100})
            outcomes.append("ok")
        except IntegrityError:
            outcomes.append("refused")

    threads = [threading.Thread(target=grab, args=(m,)) for m in members]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert outcomes.count("ok") == 3 and outcomes.count("refused") == 5
    assert _counters(db, gpu) == (900, 300)


def test_apply_skips_a_stale_placement_instead_of_double_booking(db) -> None:  # noqa: ANN001
    (gpu,) = make_node(db, "n1", gpus=1, memory_mib=1000)
    first, second = make_job(db, "a", 0.6), make_job(db, "b", 0.6)
    # a decision computed on stale data: both jobs on the same accelerator
    decision = Decision(placements=[
        Placement(str(job), (MemberPlacement(0, "n1", (SliceGrant(gpu, 600, 600),)),))
        for job in (first, second)])
    result = SchedulingService(db).apply(decision)
    assert result == {"placed": 1, "skipped": 1, "preempted": 0, "pending": 0}
    assert _counters(db, gpu) == (600, 600)
    with db.engine.connect() as c:
        states = dict(c.execute(text("SELECT id, status FROM jobs")).all())
        attempts = c.execute(text("SELECT count(*) FROM attempts")).scalar()
    assert sorted(states.values()) == ["pending", "scheduled"] and attempts == 1
