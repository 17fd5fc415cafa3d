"""Time-aware backfill: a blocked queue head's expected start comes from running jobs' declared
run times, and only jobs that end by then may use the room held for it."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.core.snapshot import Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.scheduler.factories import node, pending, running

NOW = 100.0


def run(job_id, on, gpus, first, limit, started=0.0):
    """A running job of ``gpus`` GPUs from GPU ``first``; ``limit``: its max_runtime_s."""
    return replace(running(job_id, on, gpus=gpus, first_gpu=first, started_at=started),
                   max_runtime_s=limit)


@pytest.mark.parametrize("jobs, head_gpus, gang, start", [
    # (gpus, max_runtime_s) per running job on one 8-GPU node, filled from GPU 0
    ([(4, 500), (4, 300)], 8, 1, 500.0),  # needs both to end: the later one
    ([(2, 200), (2, 400), (4, None)], 4, 1, 400.0),  # first two free 4 GPUs; the third never ends
    ([(4, 300)], 6, 1, 300.0),  # 4 idle + 4 freed
    ([(4, None), (4, 300)], 8, 1, None),  # one of them declares no run time: start unknown
    ([(8, 50)], 8, 1, NOW),  # past its limit (it is being stopped): now, not in the past
])
def test_expected_start_of_a_blocked_head(jobs, head_gpus, gang, start):
    n = node("n1")
    runs, first = [], 0
    for i, (gpus, limit) in enumerate(jobs):
        runs.append(run(f"r{i}", n, gpus, first, limit))
        first += gpus
    d = schedule(Snapshot([n], running=runs, now=NOW,
                          pending=[pending("head", gpus=head_gpus, gang=gang)]),
                 SchedulerConfig(preemption=False))
    reason = d.pending["head"]
    assert reason.expected_start == start
    assert reason.details["reserved_nodes"] == ["n1"]
    if start is None:
        assert "holding n1 for it" in reason.message
    else:
        assert f"expected to start in {start - NOW:.0f} s on n1" in reason.message


def test_a_gang_waits_for_a_node_per_member() -> None:
    """Gang members run on nodes of their own: two 4-GPU members need both nodes' jobs to end."""
    n1, n2 = node("n1"), node("n2")
    runs = [run("a", n1, 8, 0, 300), run("b", n2, 8, 0, 700)]
    d = schedule(Snapshot([n1, n2], running=runs, now=NOW, pending=[pending("head", gpus=4, gang=2)]),
                 SchedulerConfig(preemption=False))
    reason = d.pending["head"]
    assert reason.expected_start == 700.0 and sorted(reason.details["reserved_nodes"]) == ["n1", "n2"]


def test_gang_members_never_share_a_node() -> None:
    n1, n2 = node("n1"), node("n2")
    d = schedule(Snapshot([n1, n2], pending=[pending("pair", gpus=4, gang=2)]), SchedulerConfig())
    (placement,) = d.placements
    assert sorted(m.node for m in placement.members) == ["n1", "n2"]
    lonely = schedule(Snapshot([node("solo")], pending=[pending("pair", gpus=4, gang=2)]), SchedulerConfig())
    assert not lonely.placements and lonely.pending["pair"].code == "gang"


@pytest.mark.parametrize("limit, placed_on", [
    (300, "n1"),  # ends at 400, long before the head starts at 1000: backfills the held room
    (900, "n1"),  # ends exactly when the head starts
    (901, None),  # one second too long
    (None, None),  # declares no run time: never into held room
])
def test_only_jobs_ending_before_the_reserved_start_backfill(limit, placed_on):
    n = node("n1")
    runs = [run("r", n, 4, 0, 1000)]  # 4 GPUs busy until 1000, 4 idle
    jobs = [pending("head", gpus=8), replace(pending("small", gpus=1), max_runtime_s=limit)]
    d = schedule(Snapshot([n], running=runs, now=NOW, pending=jobs),
                 SchedulerConfig(preemption=False))
    assert d.pending["head"].expected_start == 1000.0
    placed = {p.job_id: p.members[0].node for p in d.placements}
    assert placed.get("small") == placed_on
    if placed_on is None:
        reason = d.pending["small"].message
        mine = "declares no run-time limit" if limit is None else f"would end at {NOW + limit:.0f}"
        assert ("1 node(s) with room for it are held for a waiting job that is expected to start "
                f"at 1000, and it {mine}") in reason


def test_unreserved_nodes_take_any_job_and_bad_run_times_are_invalid():
    n1, n2 = node("n1"), node("n2", gpus=1)
    runs = [run("r", n1, 4, 0, 1000)]
    jobs = [pending("head", gpus=8), pending("open-ended", gpus=1),
            replace(pending("zero", gpus=1), max_runtime_s=0)]
    d = schedule(Snapshot([n1, n2], running=runs, now=NOW, pending=jobs),
                 SchedulerConfig(preemption=False))
    assert {p.job_id: p.members[0].node for p in d.placements} == {"open-ended": "n2"}
    assert d.pending["zero"].code == "invalid" and "max_runtime_s must be positive" in d.pending["zero"].message


def test_jobs_placed_in_the_cycle_count_towards_the_expected_start():
    n = node("n1")
    jobs = [replace(pending("first", gpus=8), max_runtime_s=600), pending("head", gpus=8)]
    d = schedule(Snapshot([n], now=NOW, pending=jobs), SchedulerConfig(preemption=False))
    assert [p.job_id for p in d.placements] == ["first"]
    assert d.pending["head"].expected_start == NOW + 600
