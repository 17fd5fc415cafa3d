"""Property tests: no decision over-commits an accelerator or a node, and gangs are whole."""

from __future__ import annotations

from collections import defaultdict

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from controlplane.core.snapshot import Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.scheduler.factories import node, pending, queue, running

MODELS = ("H100-80GB", "A100-80GB")


@st.composite
def snapshots(draw):
    nodes = []
    for i in range(draw(st.integers(1, 4))):
        nodes.append(node(f"n{i}", gpus=draw(st.sampled_from([1, 2, 4, 8])),
                          model=draw(st.sampled_from(MODELS)), cpu=draw(st.sampled_from([8000, 32000])),
                          memory=draw(st.sampled_from([16384, 65536])),
                          domains=draw(st.sampled_from([0, 2])),
                          cordoned=draw(st.booleans()) and i > 0))
    runs = []
    for j in range(draw(st.integers(0, 4))):
        n = draw(st.sampled_from(nodes))
        idle = [a for a in n.accelerators if a.allocated_milli == 0]
        if not idle or n.free_cpu_milli < 1000:
            continue
        first = n.accelerators.index(idle[0])
        runs.append(running(f"r{j}", n, draw(st.sampled_from(["a", "b"])), gpus=1, cpu=1000,
                            memory=1024, priority=draw(st.integers(0, 2)), first_gpu=first,
                            started_at=draw(st.sampled_from([0.0, 90.0])), min_runtime_s=30))
    jobs = []
    for j in range(draw(st.integers(1, 12))):
        whole = draw(st.booleans())
        kw = {"gpus": draw(st.integers(1, 4))} if whole else {"milli": draw(st.integers(1, 1000))}
        jobs.append(pending(f"p{j}", draw(st.sampled_from(["a", "b"])), priority=draw(st.integers(0, 3)),
                            cpu=draw(st.sampled_from([0, 1000, 6000])), memory=draw(st.sampled_from([0, 4096])),
                            gang=draw(st.integers(1, 3)),
                            models=draw(st.sampled_from([(), (MODELS[0],)])), **kw))
    queues = [queue("a", guarantee_gpus=draw(st.integers(0, 8)), limit_gpus=draw(st.sampled_from([None, 6]))),
              queue("b", guarantee_gpus=draw(st.integers(0, 4)))]
    return Snapshot(nodes, queues, jobs, runs, now=100.0)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), st.sampled_from(["gpupool", "fgd", "bestfit", "binpack", "spread"]))
def test_decisions_never_overcommit_and_gangs_are_whole(snap, policy):
    accs = {a.uuid: a for n in snap.nodes for a in n.accelerators}
    nodes = {n.name: n for n in snap.nodes}
    milli = defaultdict(int, {u: a.allocated_milli for u, a in accs.items()})
    mem = defaultdict(int, {u: a.allocated_memory_mib for u, a in accs.items()})
    cpu = defaultdict(int, {n.name: n.allocated_cpu_milli for n in snap.nodes})
    host = defaultdict(int, {n.name: n.allocated_memory_mib for n in snap.nodes})
    d = schedule(snap, SchedulerConfig(policy=policy))
    running = {r.job_id: r for r in snap.running}
    for p in d.preemptions:
        for m in running[p.job_id].members:
            cpu[m.node] -= m.cpu_milli
            host[m.node] -= m.memory_mib
            for s in m.slices:
                milli[s.accelerator_uuid] -= s.compute_milli
                mem[s.accelerator_uuid] -= s.memory_mib
    jobs = {j.job_id: j for j in snap.pending}
    for p in d.placements:
        req = jobs[p.job_id].request
        assert len(p.members) == req.gang  # never a partial gang
        assert sorted(m.rank for m in p.members) == list(range(req.gang))
        for m in p.members:
            assert not nodes[m.node].cordoned
            cpu[m.node] += m.cpu_milli
            host[m.node] += m.memory_mib
            assert len(m.slices) == (req.gpus or 1)
            for s in m.slices:
                if req.gpus:
                    assert milli[s.accelerator_uuid] == 0  # whole GPUs are idle ones
                assert not req.constraints.models or accs[s.accelerator_uuid].model in req.constraints.models
                milli[s.accelerator_uuid] += s.compute_milli
                mem[s.accelerator_uuid] += s.memory_mib
    for u, a in accs.items():
        assert milli[u] <= 1000 and mem[u] <= a.memory_mib, u
    for name, n in nodes.items():
        assert cpu[name] <= n.cpu_milli and host[name] <= n.memory_mib, name
    placed = {p.job_id for p in d.placements}
    assert placed.isdisjoint(d.pending) and placed | set(d.pending) == set(jobs)
    assert all(p.reason and p.for_job_id in placed for p in d.preemptions)
