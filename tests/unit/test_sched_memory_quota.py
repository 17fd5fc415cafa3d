"""GPU-memory quotas: a queue's memory limit caps what its placements hold (known once placed),
and a queue above its memory guarantee is borrowing, so a queue within its own may reclaim."""

from __future__ import annotations

from dataclasses import replace

import pytest

from controlplane.core.snapshot import Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.scheduler.factories import node, pending, queue, running

GIB = 1024


@pytest.mark.parametrize("jobs, limit_gib, placed", [
    ([dict(milli=250, gpu_memory=30 * GIB)], 40, ["j0"]),
    ([dict(milli=250, gpu_memory=30 * GIB), dict(milli=250, gpu_memory=30 * GIB)], 40, ["j0"]),
    ([dict(gpus=1)], 40, []),  # a whole 80 GiB GPU is over a 40 GiB limit
    ([dict(gpus=1)], 80, ["j0"]),
    ([dict(gpus=1)], None, ["j0"]),  # no limit
])
def test_memory_limit_caps_what_a_queue_holds(jobs, limit_gib, placed) -> None:
    q = replace(queue("team"), memory_limit_mib=None if limit_gib is None else limit_gib * GIB)
    snap = Snapshot([node("n1", gpus=2)], [q], [pending(f"j{i}", "team", **kw) for i, kw in enumerate(jobs)])
    d = schedule(snap, SchedulerConfig())
    assert [p.job_id for p in d.placements] == placed
    for job_id, reason in d.pending.items():
        assert reason.code == "quota" and "GPU memory" in reason.message, (job_id, reason)


@pytest.mark.parametrize("memory_guarantee_gib, reclaimed", [(40, True), (None, False)])
def test_a_queue_past_its_memory_guarantee_is_borrowing(memory_guarantee_gib, reclaimed) -> None:
    n = node("n1", gpus=1)
    # team-b is within its compute guarantee (1 of 2 GPUs) but holds a whole 80 GiB GPU
    b = replace(queue("team-b", guarantee_gpus=2),
                memory_guarantee_mib=None if memory_guarantee_gib is None else memory_guarantee_gib * GIB)
    runs = [running("b-job", n, "team-b", gpus=1)]
    snap = Snapshot([n], [queue("team-a", guarantee_gpus=1), b], [pending("a-job", "team-a", gpus=1)], runs,
                    now=1000.0)
    d = schedule(snap, SchedulerConfig())
    assert ([p.job_id for p in d.preemptions] == ["b-job"]) is reclaimed
