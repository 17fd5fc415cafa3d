"""`whatif` on a small hand-made workload: every mode gives the numbers worked out by hand.

Cluster: identical nodes with 2 GPUs of 80,000 MiB. Nine jobs arrive at t=0 and run one
hour; the bound on the 95th-percentile wait is 60 s, and with nine jobs 95% means every job
(ceil(0.95 * 8) = 8 of the 8 that fit), so all must run at once:

- A: 2 whole GPUs (arrives first, so it gets a whole node);  B: 1 whole GPU;
- C1-C4: 0.25 GPU each;  D1-D2: 0.5 GPU each;
- X: 1,000,000 CPU milli, more than any node: never fits, in every mode.
Observed use: A 50% mean compute on each GPU; every other job 5% mean, 10% p95 and a
9,000 MiB peak, so right-sizing gives 10% * 1.2 -> 150 milli and 9,900 MiB -> 10,240.

By hand (GPUs needed = 2 x nodes):
- exclusive: A 2 + B 1 + C 4 + D 2 = 9 whole GPUs -> 5 nodes, 10 GPUs.
- pooled: 2 + 1 + 1 + 1 = 5 GPUs -> 3 nodes, 6 GPUs (2 nodes hold only 4).
- static-partitions: C -> 2g (2/7 >= 0.25, 2/8 >= 0.25), D -> 4g (3g's 3/7 < 0.5), B -> 7g,
  A -> two 7g on a whole node. GPU-hours: whole nodes 2, 7g 1, 4g+3g 2, 2g+2g+2g+1g 4/3 (of
  19/3). Nodes (``partitions``): 1 split [4g+3g, 2g x3+1g], 2 whole, 3 split [7g, 4g+3g],
  4 split [2g x3+1g, ...]: A on node 2, B on node 3, D on 1 and 3, but only node 4 brings
  the fourth 2g: 4 nodes, 8 GPUs.
- right-sized: A keeps 2 GPUs (one node); B, C, D become 150 milli + 10,240 MiB: 7 slices fit
  on two GPUs (6 x 150 <= 1000, 7 x 10,240 <= 80,000) -> 2 nodes, 4 GPUs.
Allocated GPU over the hour: exclusive 9/10, pooled 5/6, static (8/7 + 8/7 + 3)/8,
right-sized (7 x 0.15 + 2)/4. Used: A 2 x 0.5 + 7 x 0.05 = 1.35 GPUs in every mode.
"""

from __future__ import annotations

import math

import pytest

from controlplane.core.resources import Request
from controlplane.scheduler import SchedulerConfig
from controlplane.whatif import report
from controlplane.whatif.cluster import ClusterTemplate
from controlplane.whatif.modes import request_in
from controlplane.whatif.replay import SimJob, replay
from controlplane.whatif.rightsize import UsageBasis
from controlplane.whatif.workload import Job, NodeRow, Workload

CARD = 80_000
HOUR = 3600.0


def small_workload() -> Workload:
    light = UsageBasis(5.0, 10.0, 4000.0, 9000.0, minutes=60)
    heavy = UsageBasis(50.0, 60.0, 40000.0, 60000.0, minutes=60)
    jobs = [Job("A", 0, HOUR, Request(4000, 8000, gpus=2), heavy),
            Job("B", 0, HOUR, Request(1000, 1000, gpus=1), light)]
    jobs += [Job(f"C{i}", 0, HOUR, Request(1000, 1000, gpu_milli=250), light) for i in range(4)]
    jobs += [Job(f"D{i}", 0, HOUR, Request(1000, 1000, gpu_milli=500), light) for i in range(2)]
    jobs.append(Job("X", 0, HOUR, Request(1_000_000, 1000, gpus=1), light))
    nodes = [NodeRow(f"n{i}", 64000, 256000, 2, "X", CARD) for i in range(8)]
    return Workload("hand-made", jobs, nodes)


@pytest.fixture(scope="module")
def result():
    return report.whatif(small_workload(), bound_s=60)[0]


@pytest.mark.parametrize("mode, gpus, allocated, allocated_memory", [
    ("exclusive", 10, 9 / 10, 9 / 10),
    ("pooled", 6, 5 / 6, 5 / 6),
    ("static-partitions", 8, (8 / 7 + 8 / 7 + 3) / 8, (4 * 20000 + 2 * 40000 + 3 * CARD) / (8 * CARD)),
    ("right-sized", 4, (7 * 0.15 + 2) / 4, (7 * 10240 + 2 * CARD) / (4 * CARD)),
])
def test_each_mode_needs_the_gpus_worked_out_by_hand(result, mode, gpus, allocated,
                                                     allocated_memory):
    figures = result["modes"][mode]
    assert figures["gpus"] == gpus
    assert figures["nodes"] == gpus // 2
    assert figures["never_fit"] == 1  # X
    assert figures["jobs"] == 8 and figures["unplaced"] == 0
    assert figures["p95_wait_s"] == 0
    assert figures["allocated_gpu_fraction"] == pytest.approx(allocated, abs=1e-4)
    assert figures["allocated_memory_fraction"] == pytest.approx(allocated_memory, abs=1e-4)
    assert figures["used_gpu_fraction"] == pytest.approx(1.35 / gpus, abs=1e-4)
    # the size above serves and the one below does not
    probes = {p["nodes"]: p["serves"] for p in figures["replays"]}
    assert probes[gpus // 2] and not probes[gpus // 2 - 1]


def test_ratios_and_layouts(result):
    assert result["ratios"] == {"exclusive/static-partitions": 1.25,
                                "exclusive/pooled": round(10 / 6, 3),
                                "exclusive/right-sized": 2.5}
    layouts = result["modes"]["static-partitions"]["layouts"]
    assert layouts == pytest.approx({"whole nodes": 2 / (19 / 3), "7g": 1 / (19 / 3),
                                     "4g+3g": 2 / (19 / 3), "2g+2g+2g+1g": (4 / 3) / (19 / 3)},
                                    abs=1e-4)


def test_waits_percentile_and_early_stop():
    """Two GPUs, three one-GPU jobs of 100 s at t=0: the third waits 100 s."""
    template = ClusterTemplate([NodeRow("n0", 8000, 8000, 2, "X", CARD)])
    jobs = [SimJob(f"j{i}", 0.0, 100.0, Request(100, 100, gpus=1), 1.0) for i in range(3)]
    config = SchedulerConfig(preemption=False)
    run = replay(jobs, template.build(1), config)
    assert sorted(run.waits) == [0, 0, 100]
    assert run.wait_percentile(95) == 100 and run.wait_percentile(50) == 0
    assert run.serves(100) and not run.serves(99)
    assert run.timeline.mean("allocated_gpu") == pytest.approx((2 * 100 + 1 * 100) / 200)
    assert max(run.timeline.queued_jobs) == 1
    stopped = replay(jobs, template.build(1), config, bound_s=50)
    assert not stopped.finished and not stopped.serves(50)
    too_big = [SimJob("big", 0.0, 1.0, Request(100, 100, gpus=3), 3.0)]
    never = replay(too_big, template.build(1), config)
    assert never.unplaced == 1 and math.isinf(never.wait_percentile(95))


@pytest.mark.parametrize("milli, profile", [(100, "1g"), (250, "2g"), (320, "3g"), (470, "4g"),
                                            (650, "7g"), (810, "7g")])
def test_static_partitions_take_the_smallest_profile_that_holds_the_request(milli, profile):
    job = Job("j", 0, 1, Request(1000, 1000, gpu_milli=milli))
    asked = request_in("static-partitions", job, {"X": 49152})
    assert asked.request.gpus == 1 and asked.request.constraints.models == (f"X/{profile}",)


def test_right_sizing_and_oversubscription_of_one_whole_gpu_job():
    """p95 26.7 % -> 32.04 % -> 350 milli; peak 37,000 MiB -> 40,700 -> 40 GiB; mean memory
    20,000 MiB -> 22,000 -> 22 GiB when memory may be oversubscribed."""
    job = Job("j", 0, 1, Request(1000, 1000, gpus=1), UsageBasis(5.0, 26.7, 20000.0, 37000.0, 60))
    cards = {"X": 49152}
    assert request_in("exclusive", job, cards).request.gpus == 1
    sized = request_in("right-sized", job, cards)
    assert (sized.request.gpu_milli, sized.request.gpu_memory_mib) == (350, 40 * 1024)
    assert sized.gpu_share == pytest.approx(40 / 48)  # memory binds
    over = request_in("oversubscribed", job, cards).request
    assert (over.gpu_milli, over.gpu_memory_mib) == (350, 22 * 1024)
    small = Job("s", 0, 1, Request(1000, 1000, gpu_milli=200), job.usage.scaled(0.2))
    assert request_in("right-sized", small, cards).request.gpu_milli == 100  # 5.34 % * 1.2 -> 64 -> 100
    with pytest.raises(ValueError, match="unknown mode 'mig'"):
        request_in("mig", job, cards)
