"""A pool with no nodes yet (first start, all agents gone) schedules nothing and explains why."""

from controlplane.core.resources import Request
from controlplane.core.snapshot import PendingJob, Snapshot
from controlplane.scheduler import schedule


def test_empty_pool_leaves_jobs_pending_with_a_reason() -> None:
    decision = schedule(Snapshot(nodes=[], pending=[PendingJob("j1", "default/default", Request(gpus=1))]))
    assert decision.placements == []
    assert "no accelerator" in decision.pending["j1"].message


def test_empty_pool_without_jobs_is_an_empty_decision() -> None:
    decision = schedule(Snapshot(nodes=[]))
    assert decision.placements == [] and decision.pending == {}
