"""``lifecycle.transition`` is a compare-and-set: illegal moves and stale reads are refused,
and every status change leaves its event."""

from __future__ import annotations

import pytest
from sqlalchemy import select, text

from controlplane.core.states import JobState
from controlplane.db.models import EventRow, JobRow
from controlplane.services import lifecycle
from controlplane.services.errors import Conflict
from tests.support.factories import make_job


def test_a_legal_move_updates_and_records(db) -> None:  # noqa: ANN001
    job_id = make_job(db)
    with db.tx() as s:
        job = s.get(JobRow, job_id)
        lifecycle.transition(s, job, JobState.CANCELLED, actor="user:t", reason="no longer needed")
        assert job.status == "cancelled"
    with db.read() as s:
        assert s.get(JobRow, job_id).status_reason == "no longer needed"
        kinds = list(s.scalars(select(EventRow.kind).where(EventRow.job_id == job_id)))
    assert kinds == ["cancelled"]


def test_an_illegal_move_is_refused(db) -> None:  # noqa: ANN001
    job_id = make_job(db)
    with pytest.raises(Conflict, match="pending; it cannot become running"), db.tx() as s:
        lifecycle.transition(s, s.get(JobRow, job_id), JobState.RUNNING, actor="t", reason=None)
    with db.read() as s:
        assert s.get(JobRow, job_id).status == "pending"


def test_a_stale_read_is_refused(db) -> None:  # noqa: ANN001
    job_id = make_job(db)
    with pytest.raises(lifecycle.StaleState), db.tx() as s:
        job = s.get(JobRow, job_id)  # read as pending...
        s.execute(text("UPDATE jobs SET status = 'scheduled' WHERE id = :id"), {"id": job_id})
        lifecycle.transition(s, job, JobState.CANCELLED, actor="t", reason="late")  # ...moved meanwhile
    with db.read() as s:
        assert s.get(JobRow, job_id).status == "pending"  # the whole transaction rolled back
        assert s.scalar(select(EventRow.id).where(EventRow.job_id == job_id)) is None
