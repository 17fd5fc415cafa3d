"""Scheduler actions on small pools: quotas, borrow/reclaim, preemption, gangs, backfill, DRF."""

from __future__ import annotations

import pytest

from controlplane.core.snapshot import Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.scheduler.factories import node, pending, queue, running


def placed(decision) -> dict[str, list[str]]:
    return {p.job_id: [m.node for m in p.members] for p in decision.placements}


def test_whole_and_fraction_fit_and_are_not_overcommitted():
    snap = Snapshot([node("n1", gpus=2)], pending=[
        pending("a", gpus=2), pending("b", milli=500)])
    d = schedule(snap)
    assert placed(d) == {"a": ["n1"]}
    assert d.pending["b"].code == "capacity"
    assert "no node has 0.5 of a H100-80GB (500 milli); no matching GPU has anything free" in d.pending["b"].message


def test_fractions_share_one_gpu_and_memory_is_proportional():
    snap = Snapshot([node("n1", gpus=1)], pending=[pending(f"f{i}", milli=250) for i in range(5)])
    d = schedule(snap)
    assert len(d.placements) == 4
    grants = [p.members[0].slices[0] for p in d.placements]
    assert {g.accelerator_uuid for g in grants} == {"n1-gpu0"}
    assert sum(g.memory_mib for g in grants) <= 81559
    assert d.pending["f4"].code == "capacity"


@pytest.mark.parametrize("kw, code, text", [
    ({"gpus": 1, "models": ("T4",)}, "constraints", "no accelerator matches models T4"),
    ({"gpus": 9}, "capacity", "no node can ever hold one member"),
    ({"gpus": 1, "cpu": 10**9}, "capacity", "no node can ever hold one member"),
    ({"milli": 1500}, "invalid", "gpu_milli 1500 is above 1000"),
    ({"gpus": 1, "gang": 0}, "invalid", "gang must be at least 1"),
])
def test_unschedulable_requests_are_explained(kw, code, text):
    d = schedule(Snapshot([node("n1")], pending=[pending("j", **kw)]))
    reason = d.pending["j"]
    assert reason.code == code and reason.unschedulable
    assert text in reason.message


def test_model_constraint_picks_the_allowed_model():
    snap = Snapshot([node("a", model="A100-80GB"), node("h", model="H100-80GB")],
                    pending=[pending("j", gpus=2, models=("H100-80GB",))])
    assert placed(schedule(snap)) == {"j": ["h"]}


def test_cordoned_nodes_get_nothing_and_say_so():
    snap = Snapshot([node("n1", cordoned=True)], pending=[pending("j", gpus=1)])
    d = schedule(snap)
    assert d.pending["j"].code == "cordoned"
    assert "cordoned" in d.pending["j"].message


def test_quota_limit_blocks_with_readable_numbers():
    n = node("n1")
    snap = Snapshot([n], queues=[queue("team-a", guarantee_gpus=8, limit_gpus=8)],
                    running=[running("r", n, "team-a", gpus=7), ],
                    pending=[pending("j", "team-a", gpus=2)])
    reason = schedule(snap).pending["j"]
    assert reason.code == "quota"
    assert reason.message.startswith("quota: team-a uses 7 of its 8 GPU guarantee and its limit is 8")


def test_gang_is_all_or_nothing_and_explains_how_many_fit():
    n3 = node("n3", gpus=4)
    snap = Snapshot([node("n1", gpus=4), node("n2", gpus=4), n3], running=[running("r", n3, gpus=2)],
                    pending=[pending("g", gpus=4, gang=3), pending("s", gpus=2)])
    d = schedule(snap, SchedulerConfig(max_reservations=0))
    assert "g" not in placed(d)
    assert d.pending["g"].code == "gang"
    assert d.pending["g"].message.startswith("gang of 3 needs 3 member spots, 2 fit")
    assert "s" in placed(d)


def test_gang_members_land_on_distinct_spots():
    snap = Snapshot([node(f"n{i}", gpus=8) for i in range(3)], pending=[pending("g", gpus=8, gang=3)])
    members = schedule(snap).placements[0].members
    assert sorted(m.node for m in members) == ["n0", "n1", "n2"]
    assert [m.rank for m in members] == [0, 1, 2]


def test_topology_keeps_a_multi_gpu_member_on_one_nvlink_domain():
    n = node("n1", gpus=8, domains=2)
    r = running("r", n, gpus=1, first_gpu=0)  # domain nvl0 now has 3 idle, nvl1 has 4
    d = schedule(Snapshot([n], running=[r], pending=[pending("j", gpus=4)]))
    uuids = [s.accelerator_uuid for s in d.placements[0].members[0].slices]
    assert uuids == [f"n1-gpu{i}" for i in range(4, 8)]


def test_priority_preemption_respects_min_runtime_and_picks_least_work():
    n = node("n1", gpus=2)
    old = running("old", n, gpus=1, started_at=0, first_gpu=0)
    new = running("new", n, gpus=1, started_at=900, first_gpu=1)
    snap = Snapshot([n], running=[old, new], now=1000,
                    pending=[pending("hi", priority=10, gpus=1)])
    d = schedule(snap)
    assert [p.job_id for p in d.preemptions] == ["new"]
    assert d.preemptions[0].for_job_id == "hi"
    assert "outranks it" in d.preemptions[0].reason
    assert d.placements[0].preempts == ("new",)
    # the young one is protected by its minimum runtime: the old one goes instead
    n2 = node("n1", gpus=2)
    snap2 = Snapshot([n2], now=1000, running=[
        running("old", n2, gpus=1, started_at=0, first_gpu=0),
        running("new", n2, gpus=1, started_at=900, min_runtime_s=600, first_gpu=1)],
        pending=[pending("hi", priority=10, gpus=1)])
    assert [p.job_id for p in schedule(snap2).preemptions] == ["old"]


def test_no_preemption_of_equal_priority_or_unpreemptible_work():
    n = node("n1", gpus=1)
    snap = Snapshot([n], running=[running("r", n, gpus=1, preemptible=True)],
                    pending=[pending("j", gpus=1)])
    d = schedule(snap)
    assert not d.preemptions and d.pending["j"].code == "capacity"
    n = node("n1", gpus=1)
    snap = Snapshot([n], running=[running("r", n, gpus=1, preemptible=False)],
                    pending=[pending("j", gpus=1, priority=5)])
    assert not schedule(snap).preemptions


def test_borrowing_then_reclaim_by_the_owner():
    n = node("n1", gpus=8)
    queues = [queue("team-a", guarantee_gpus=8), queue("team-b", guarantee_gpus=0)]
    # team-b borrows idle guaranteed capacity of team-a
    d = schedule(Snapshot([n], queues=queues, pending=[pending("b1", "team-b", gpus=8)]))
    assert placed(d) == {"b1": ["n1"]}
    # team-a comes back: b1 is reclaimed, with a reason naming queue and guarantee
    n = node("n1", gpus=8)
    snap = Snapshot([n], queues=queues, now=100,
                    running=[running("b1", n, "team-b", gpus=8)],
                    pending=[pending("a1", "team-a", gpus=4)])
    d = schedule(snap)
    assert [p.job_id for p in d.preemptions] == ["b1"]
    assert d.preemptions[0].reason.startswith(
        "preempted: reclaimed by queue team-a (guarantee 8 GPU) for job a1")
    assert placed(d) == {"a1": ["n1"]}


def test_no_reclaim_beyond_own_guarantee():
    n = node("n1", gpus=8)
    queues = [queue("team-a", guarantee_gpus=2), queue("team-b")]
    snap = Snapshot([n], queues=queues, running=[running("b1", n, "team-b", gpus=8)],
                    pending=[pending("a1", "team-a", gpus=4)])
    d = schedule(snap)
    assert not d.preemptions and "a1" in d.pending


def test_reclaim_takes_only_what_is_needed():
    n = node("n1", gpus=8)
    queues = [queue("team-a", guarantee_gpus=8), queue("team-b")]
    runs = [running(f"b{i}", n, "team-b", gpus=2, first_gpu=2 * i, started_at=10 * i) for i in range(4)]
    snap = Snapshot([n], queues=queues, running=runs, now=100,
                    pending=[pending("a1", "team-a", gpus=2)])
    d = schedule(snap)
    assert [p.job_id for p in d.preemptions] == ["b3"]  # youngest: least work lost


def test_backfill_does_not_starve_the_head():
    big, small = node("big", gpus=8), node("small", gpus=2)
    r = running("r", big, gpus=4)
    snap = Snapshot([big, small], running=[r], pending=[
        pending("head", gpus=8), *[pending(f"s{i}", gpus=1) for i in range(6)]])
    d = schedule(snap)
    assert "head" in d.pending and "holding big for it" in d.pending["head"].message
    assert all(nodes == ["small"] for nodes in placed(d).values())
    assert len(d.placements) == 2


def test_backfill_off_holds_the_queue():
    snap = Snapshot([node("n1", gpus=2)], pending=[pending("head", gpus=4, cpu=1000),
                                                    pending("s", gpus=1)])
    d = schedule(snap, SchedulerConfig(backfill=False))
    # head can never fit (4 > 2): unschedulable heads do not hold the queue
    assert "s" in placed(d)
    n = node("n1", gpus=2)
    snap = Snapshot([n], running=[running("r", n, gpus=1)],
                    pending=[pending("head", gpus=2), pending("s", gpus=1)])
    d = schedule(snap, SchedulerConfig(backfill=False))
    assert not d.placements and d.pending["s"].code == "priority"


def test_drf_alternates_between_equal_queues_and_follows_weights():
    snap = Snapshot([node("n1", gpus=8)], queues=[queue("a"), queue("b")], pending=[
        *[pending(f"a{i}", "a", gpus=1) for i in range(8)],
        *[pending(f"b{i}", "b", gpus=1) for i in range(8)]])
    d = schedule(snap)
    got = sorted(p.job_id[0] for p in d.placements)
    assert got.count("a") == 4 and got.count("b") == 4
    snap = Snapshot([node("n1", gpus=8)], queues=[queue("a", weight=3), queue("b")], pending=[
        *[pending(f"a{i}", "a", gpus=1) for i in range(8)],
        *[pending(f"b{i}", "b", gpus=1) for i in range(8)]])
    got = sorted(p.job_id[0] for p in schedule(snap).placements)
    assert got.count("a") == 6 and got.count("b") == 2


def test_priority_order_within_a_queue():
    snap = Snapshot([node("n1", gpus=1)], pending=[pending("low", gpus=1, priority=0),
                                                    pending("high", gpus=1, priority=5)])
    d = schedule(snap, SchedulerConfig(preemption=False))
    assert placed(d) == {"high": ["n1"]}


@pytest.mark.parametrize("policy", ["firstfit", "binpack", "spread", "bestfit", "fgd", "gpupool"])
def test_every_policy_places_a_mixed_batch(policy):
    nodes = [node(f"n{i}", gpus=4) for i in range(3)]
    jobs = [pending(f"j{i}", milli=300 + 100 * (i % 5)) for i in range(10)] + [pending("w", gpus=2)]
    d = schedule(Snapshot(nodes, pending=jobs), SchedulerConfig(policy=policy))
    assert len(d.placements) == 11 and not d.pending


def test_unknown_policy_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown policy 'nope'"):
        schedule(Snapshot([node("n1")]), SchedulerConfig(policy="nope"))


def test_model_guarantee_reclaims_on_that_model():
    from controlplane.core.snapshot import Queue

    h100, a100 = node("h", gpus=2, model="H100-80GB"), node("a", gpus=2, model="A100-80GB")
    queues = [Queue("team-a", "team-a", guarantee_milli=0,
                    model_guarantees_milli=(("H100-80GB", 2000),)), queue("team-b")]
    runs = [running("b-h", h100, "team-b", gpus=2), running("b-a", a100, "team-b", gpus=2)]
    snap = Snapshot([h100, a100], queues=queues, running=runs, now=10,
                    pending=[pending("a1", "team-a", gpus=1, models=("H100-80GB",)),
                             pending("a2", "team-a", gpus=1, models=("A100-80GB",))])
    d = schedule(snap)
    assert [p.job_id for p in d.preemptions] == ["b-h"]
    assert placed(d) == {"a1": ["h"]}
    assert "a2" in d.pending  # no guarantee on A100: no reclaim there


def test_queue_below_its_guarantee_goes_before_a_borrower():
    queues = [queue("team-a", guarantee_gpus=1), queue("team-b")]
    snap = Snapshot([node("n1", gpus=1)], queues=queues,
                    pending=[pending("b-old", "team-b", gpus=1), pending("a-new", "team-a", gpus=1)])
    d = schedule(snap)
    assert placed(d) == {"a-new": ["n1"]}
    assert not d.preemptions


def test_gang_larger_than_the_pool_is_unschedulable():
    snap = Snapshot([node("n1", gpus=8), node("n2", gpus=8)], pending=[pending("g", gpus=8, gang=3)])
    reason = schedule(snap).pending["g"]
    assert reason.unschedulable and reason.code == "gang"
    assert reason.message == "gang of 3 needs 3 member spots; even empty, the pool has room for 2"


@pytest.mark.parametrize("kw, code, never", [
    ({"gpus": 1}, None, None), ({"gpus": 4}, "capacity", False), ({"gpus": 9}, "capacity", True),
    ({"gpus": -1}, "invalid", True)])
def test_reason_tells_not_now_from_never_from_error(kw, code, never):
    n = node("n1", gpus=8)
    snap = Snapshot([n], running=[running("r", n, gpus=5)], pending=[pending("j", **kw)])
    reason = schedule(snap, SchedulerConfig(preemption=False)).pending.get("j")
    assert (reason and reason.code, reason and reason.unschedulable) == (code, never)


def test_gang_members_each_take_a_node():
    """A member is one node's share of a job (several GPUs on one node are one member)."""
    nodes = [node(f"n{i}", gpus=8) for i in range(3)]
    for policy in ("gpupool", "binpack", "spread"):
        d = schedule(Snapshot(nodes, pending=[pending("g", gpus=2, gang=3)]), SchedulerConfig(policy=policy))
        assert sorted(m.node for m in d.placements[0].members) == ["n0", "n1", "n2"], policy
    d = schedule(Snapshot(nodes[:2], pending=[pending("g", gpus=2, gang=3)]), SchedulerConfig())
    assert not d.placements and d.pending["g"].code == "gang"


@pytest.mark.parametrize("constraints, expected", [
    ({"vendor": "amd"}, "mi"),
    ({"labels": (("zone", "b"),)}, "zb"),
    ({"min_memory_mib": 100000}, "big"),
])
def test_vendor_label_and_memory_constraints(constraints, expected):
    from controlplane.core.resources import Constraints, Request
    from controlplane.core.snapshot import PendingJob

    mi = node("mi", gpus=2, model="MI300X")
    for a in mi.accelerators:
        a.vendor = "amd"
    nodes = [node("za", labels={"zone": "a"}), node("zb", labels={"zone": "b"}), mi,
             node("big", gpus=2, model="H200", memory_per_gpu=141000)]
    job = PendingJob("j", "default", Request(1000, 1024, gpus=1, constraints=Constraints(**constraints)))
    d = schedule(Snapshot(nodes, pending=[job]))
    assert [m.node for m in d.placements[0].members] == [expected]


def test_a_failed_gang_preemption_leaves_quota_and_capacity_untouched():
    # the gang needs 2 nodes; only one has a victim: the attempt frees and rolls back
    n1, n2 = node("n1", gpus=8), node("n2", gpus=8)
    queues = [queue("hi", guarantee_gpus=16), queue("lo", limit_gpus=16)]
    runs = [running("v1", n1, "lo", gpus=8, started_at=0),
            running("keep", n2, "lo", gpus=8, started_at=0, preemptible=False)]
    snap = Snapshot([n1, n2], queues=queues, running=runs, now=100,
                    pending=[pending("gang", "hi", gpus=8, gang=2), pending("one", "lo", gpus=1)])
    d = schedule(snap)
    assert not d.preemptions and not d.placements
    assert d.pending["gang"].code == "gang"
    # lo still uses its whole limit: had the failed attempt kept v1's release in the quota
    # book, "one" would pass the limit and wait for capacity instead
    assert d.pending["one"].code == "quota"
