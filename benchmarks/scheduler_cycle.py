"""One scheduling cycle on a busy pool: 1,000 nodes x 8 GPUs, 10,000 pending jobs.

Only a few hundred jobs can be placed; every other job must get a pending reason. Target:
one cycle (placements plus reasons) in <= 0.25 s. Prints one JSON line; cycle_cpu_s is the
process CPU time, which stays honest when other work shares the cores, and loadavg_1m says
how busy the machine was.
Run: .venv/bin/python benchmarks/scheduler_cycle.py [--policy gpupool] [--nodes 1000] [--jobs 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import time

from controlplane.core.snapshot import Snapshot
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.scheduler.factories import node, pending, queue, running


def busy_pool(n_nodes: int, n_jobs: int, seed: int = 1) -> Snapshot:
    rng = random.Random(seed)
    teams = [f"team-{i}" for i in range(8)]
    nodes, runs = [], []
    for i in range(n_nodes):
        nd = node(f"node-{i:04d}", gpus=8, cpu=128000, memory=1024000, domains=2)
        nodes.append(nd)
        for g in range(7):  # 7 of 8 GPUs busy with whole-GPU jobs
            runs.append(running(f"r{i}-{g}", nd, rng.choice(teams), gpus=1, cpu=8000,
                                memory=65536, first_gpu=g, started_at=rng.uniform(0, 3000),
                                min_runtime_s=600, priority=rng.choice([0, 0, 1])))
        if rng.random() < 0.8:  # most last GPUs hold a fraction
            runs.append(running(f"f{i}", nd, rng.choice(teams), milli=rng.choice([800, 900]),
                                cpu=4000, memory=32768, first_gpu=7, started_at=1000,
                                min_runtime_s=600))
    shapes = [dict(gpus=1), dict(gpus=2), dict(gpus=4), dict(gpus=8), dict(gpus=8, gang=4),
              dict(milli=250), dict(milli=300), dict(milli=500), dict(gpus=1, cpu=64000)]
    weights = [30, 10, 8, 5, 2, 15, 15, 10, 5]
    jobs = []
    for j in range(n_jobs):
        kw = dict(rng.choices(shapes, weights)[0])
        kw.setdefault("cpu", rng.choice([2000, 4000, 8000]))
        jobs.append(pending(f"p{j}", rng.choice(teams), priority=rng.choice([0, 0, 0, 1, 2]),
                            memory=rng.choice([8192, 16384, 65536]), **kw))
    queues = [queue(t, guarantee_gpus=n_nodes, limit_gpus=None) for t in teams]
    return Snapshot(nodes, queues, jobs, runs, now=3600.0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="gpupool")
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=10000)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    times, cpu, decision = [], [], None
    for _ in range(args.repeat):
        snap = busy_pool(args.nodes, args.jobs)
        t0, c0 = time.perf_counter(), time.process_time()
        decision = schedule(snap, SchedulerConfig(policy=args.policy))
        times.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
    assert decision is not None
    print(json.dumps({
        "benchmark": "scheduler_cycle", "policy": args.policy, "nodes": args.nodes,
        "gpus": args.nodes * 8, "pending": args.jobs, "placed": len(decision.placements),
        "preempted": len(decision.preemptions), "pending_reasons": len(decision.pending),
        "cycle_s_best": round(min(times), 3), "cycle_s_median": round(sorted(times)[len(times) // 2], 3),
        "cycle_cpu_s_best": round(min(cpu), 3), "target_s": 0.25,
        "loadavg_1m": round(os.getloadavg()[0], 2),
    }))


if __name__ == "__main__":
    main()
