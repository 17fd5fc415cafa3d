"""Plugins and framework pieces: fragmentation numbers, each scorer's preference, Plan undo."""

from __future__ import annotations

import numpy as np
import pytest

from controlplane.scheduler import policies
from controlplane.scheduler.frag import FragCache, TaskShape, Workload
from controlplane.scheduler.framework import Context, MemberShape, Plan
from controlplane.scheduler.plugins.fit import candidates, grants_of
from controlplane.scheduler.state import Claim, ClusterState


def cluster(rows):
    """rows: (name, cpu, [free milli per GPU])."""
    g = max(len(r[2]) for r in rows)
    free = np.zeros((len(rows), g), np.int64)
    valid = np.zeros((len(rows), g), bool)
    for i, (_, _, gpus) in enumerate(rows):
        free[i, :len(gpus)] = gpus
        valid[i, :len(gpus)] = True
    st = ClusterState([r[0] for r in rows], [r[1] for r in rows], [10**6] * len(rows), free,
                      np.where(valid, 1000, 0), valid, np.zeros((len(rows), g), np.int64), ["G"])
    st.acc_mem_cap = np.where(valid, 1000, 0)
    st.uuids = [[f"{r[0]}-{j}" for j in range(len(r[2]))] for r in rows]
    return st


WORKLOAD = Workload([TaskShape(1000, 1, 500), TaskShape(1000, 1, 1000), TaskShape(1000, 0, 0)],
                    [2, 1, 1])


@pytest.mark.parametrize("cpu, gpus, expected", [
    (8000, [1000, 300], 0.5 * 300 + 0.25 * 300 + 0.25 * 1300),  # Q3 for both GPU shapes
    (500, [1000, 300], 1300),  # lacks CPU for every shape: all free GPU is fragmented
    (8000, [400, 300], 0.5 * 700 + 0.25 * 700 + 0.25 * 700),  # nothing fits: all fragmented
    (8000, [1000, 1000], 0.25 * 2000),  # only the CPU-only shape counts the free GPUs
])
def test_node_fragmentation_matches_the_paper_definition(cpu, gpus, expected):
    cache = FragCache(cluster([("n", cpu, gpus)]), WORKLOAD)
    assert cache.frag[0] == pytest.approx(expected)


def test_incremental_delta_equals_recomputation():
    rng = np.random.default_rng(7)
    rows = [(f"n{i}", int(rng.integers(0, 9)) * 1000, list(rng.integers(0, 11, size=4) * 100))
            for i in range(12)]
    st = cluster(rows)
    ctx = Context(st, WORKLOAD)
    cache = ctx.fragmentation
    for shape in (MemberShape(1000, 0, milli=300), MemberShape(2000, 0, whole=1),
                  MemberShape(1000, 0)):
        cands = candidates(ctx, shape)
        from controlplane.scheduler.plugins.scores import frag_delta
        deltas = frag_delta(cache, shape, cands)
        for c in range(len(cands)):
            before = cache.frag.copy()
            node, grants = grants_of(st, shape, cands, c)
            plan = Plan(ctx)
            plan.assume(Claim(node, shape.cpu_milli, 0, grants))
            assert cache.frag[node] - before[node] == pytest.approx(deltas[c])
            plan.rollback()
            assert np.allclose(cache.frag, before)


def pick(policy, rows, shape):
    st = cluster(rows)
    ctx = Context(st, WORKLOAD)
    prof = policies.profile(policy)
    prof.prepare(ctx)
    cands = candidates(ctx, shape)
    node, grants = grants_of(st, shape, cands, prof.pick(ctx, shape, cands))
    return st.names[node], grants


ROWS = [("empty", 8000, [1000, 1000]), ("half", 8000, [1000, 500]), ("hole", 8000, [300, 0])]


@pytest.mark.parametrize("policy, shape, node, gpu", [
    ("binpack", MemberShape(1000, 0, milli=300), "hole", 0),
    ("spread", MemberShape(1000, 0, milli=300), "empty", None),
    ("bestfit", MemberShape(1000, 0, milli=300), "hole", 0),
    ("fgd", MemberShape(1000, 0, milli=300), "hole", 0),  # fills the hole: F drops most
    ("fgd", MemberShape(1000, 0, milli=500), "half", 1),  # closes the half GPU
    ("gpupool", MemberShape(1000, 0, milli=500), "half", 1),
    ("firstfit", MemberShape(1000, 0, milli=300), "empty", 0),  # lowest rank = name order
    ("bestfit", MemberShape(1000, 0, whole=1), "half", 0),
])
def test_each_scorer_prefers_what_it_should(policy, shape, node, gpu):
    got_node, grants = pick(policy, ROWS, shape)
    assert got_node == node
    if gpu is not None:
        assert grants[0][0] == gpu


def test_plan_rollback_to_savepoint_restores_exactly():
    st = cluster(ROWS)
    before = (st.cpu_free.copy(), st.gpu_free.copy())
    plan = Plan(Context(st))
    plan.assume(Claim(0, 1000, 10, ((0, 400, 400),)))
    mark = plan.savepoint()
    plan.assume(Claim(1, 1000, 10, ((1, 500, 500),)))
    plan.release(Claim(0, 1000, 10, ((0, 400, 400),)))
    plan.rollback(mark)
    assert st.gpu_free[0, 0] == 600 and st.gpu_free[1, 1] == 500
    plan.rollback()
    assert (st.cpu_free == before[0]).all() and (st.gpu_free == before[1]).all()


def test_typical_workload_keeps_shapes_until_95_percent():
    pods = [TaskShape(1, 1, 500)] * 90 + [TaskShape(2, 1, 1000)] * 6 + [TaskShape(3, 0, 0)] * 4
    w = Workload.typical(pods)
    assert w.shapes == [TaskShape(1, 1, 500), TaskShape(2, 1, 1000)]
    assert w.weights == pytest.approx([90 / 96, 6 / 96])


def test_unknown_plugin_weight_is_rejected():
    with pytest.raises(ValueError, match="unknown score plugin"):
        policies.profile("custom", {"fgd": 1, "magic": 2})


@pytest.mark.parametrize("policy", ["fgd", "gpupool", "bestfit"])
def test_scoring_interchangeable_spots_once_changes_no_decision(policy, monkeypatch):
    from controlplane.scheduler import replay
    from controlplane.scheduler.framework import Profile
    from controlplane.scheduler.tracefile import TraceNode, TracePod

    nodes = [TraceNode(f"n{i:02d}", 32000, 131072, 4 if i % 3 else 8, "G2" if i % 2 else "T4")
             for i in range(40)]
    rng = np.random.default_rng(3)
    pods = [TracePod(f"p{i:03d}", int(rng.choice([1000, 4000, 8000])), 4096,
                     int(rng.choice([0, 1, 1, 1, 2])), int(rng.choice([250, 470, 810, 1000])))
            for i in range(300)]
    pods = [TracePod(p.name, p.cpu_milli, p.memory_mib, p.num_gpu,
                     1000 if p.num_gpu > 1 else (p.gpu_milli if p.num_gpu else 0)) for p in pods]
    fast = replay.run(nodes, pods, policy, seed=5)
    monkeypatch.setattr(Profile, "total", Profile._weighted)
    slow = replay.run(nodes, pods, policy, seed=5)
    assert (fast.placed, fast.alloc_pct, fast.frag_pct) == (slow.placed, slow.alloc_pct, slow.frag_pct)


def two_models(gpus=(8, 2)):
    """A G2 node and a T4 node (the T4 one first in name order)."""
    st = ClusterState.from_table(["b-g2", "a-t4"], [64000, 64000], [10**6, 10**6], list(gpus),
                                 ["G2", "T4"])
    return st


def test_contention_by_hand():
    from controlplane.scheduler.contention import Contention

    st = two_models()
    demand = Workload([], [], {TaskShape(1000, 1, 1000): 1, TaskShape(1000, 1, 1000, ("T4",)): 1})
    contention = Contention(st, demand)
    # supply: any model 10 GPUs, T4 2 GPUs; per free milli G2 carries .5/10000, T4 .5/10000+.5/2000
    assert contention.rho() == pytest.approx([0.5, 3.0])
    plan = Plan(Context(st))
    plan.assume(Claim(1, 0, 0, ((0, 1000, 1000),)))  # one T4 taken: T4 more contended still
    assert contention.rho() == pytest.approx([(0.5 / 9000) / (1 / 9000), (0.5 / 9000 + 0.5 / 1000) / (1 / 9000)])
    assert not Contention(st, Workload([], [], {TaskShape(1000, 1, 1000): 1})).active
    # a size only the G2 node has (half the GPU demand): it presses on G2 alone
    big = Contention(st, Workload([], [], {TaskShape(1000, 1, 1000): 8, TaskShape(1000, 8, 1000): 1}))
    assert big.rho() == pytest.approx([(0.5 / 9000 + 0.5 / 8000) / (1 / 9000), (0.5 / 9000) / (1 / 9000)])


ANY, T4, G2 = TaskShape(1000, 1, 1000), TaskShape(1000, 1, 1000, ("T4",)), TaskShape(1000, 1, 1000, ("G2",))


@pytest.mark.parametrize("demand, node", [
    ({ANY: 1}, "a-t4"),  # nothing constrained: equal spots, lowest rank (name) wins
    ({ANY: 7, T4: 3}, "b-g2"),  # T4 is what the constrained demand needs: leave it
    ({ANY: 7, G2: 3}, "a-t4"),
])
def test_unconstrained_work_leaves_contended_models_alone(demand, node):
    st = two_models(gpus=(2, 2))
    st.acc_mem_cap = st.gpu_mem_free.copy()
    ctx = Context(st, Workload([ANY, T4, G2], [1, 1, 1], demand))
    prof = policies.profile("gpupool")
    prof.prepare(ctx)
    shape = MemberShape(1000, 0, whole=1)
    cands = candidates(ctx, shape)
    assert st.names[int(cands.nodes[prof.pick(ctx, shape, cands)])] == node


def test_plan_rolls_back_quota_and_gang_with_capacity():
    from controlplane.core.snapshot import Snapshot
    from controlplane.scheduler.factories import node, queue, request
    from controlplane.scheduler.queues import Held, QuotaBook

    snap = Snapshot([node("n1")], queues=[queue("a", guarantee_gpus=2)])
    st = ClusterState.from_nodes(snap.nodes)
    book = QuotaBook(snap)
    ctx = Context(st)
    plan = Plan(ctx, book)
    plan.assume(Claim(0, 1000, 10, ((0, 1000, 81559),)))
    plan.charge("a", request(gpus=1), Held({}, 81559))
    plan.join_gang(0)
    mark = plan.savepoint()
    plan.release(Claim(0, 1000, 10, ((0, 1000, 81559),)))
    plan.charge("a", request(gpus=1), Held({}, 81559), -1)
    plan.join_gang(3)
    assert (book.of("a").gpu_milli, book.of("a").gpu_memory_mib, ctx.gang) == (0, 0, {0, 3})
    plan.rollback(mark)
    assert (book.of("a").gpu_milli, ctx.gang, int(st.gpu_free[0, 0])) == (1000, {0}, 0)
    assert book.of("a").gpu_memory_mib == 81559
    plan.rollback()
    assert (book.of("a").gpu_milli, ctx.gang, int(st.gpu_free[0, 0])) == (0, set(), 1000)
    plan.join_gang(1)
    plan.charge("a", request(gpus=2), Held({}, 2 * 81559))
    plan.commit()  # kept; the next job starts with an empty gang
    assert (book.of("a").gpu_milli, ctx.gang, plan.log) == (2000, set(), [])
