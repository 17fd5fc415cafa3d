"""Placement speed on the 1,213-node Alibaba cluster (FGD-paper replay), one JSON line.

Target: >= 5,000 placements/s wall clock with the default policy; placements per CPU-second
(this process) stay honest when other work shares the cores, and the 1-minute load average
says how busy the machine was. For the reproduction figures use
`gpupool bench trace ... --seeds 42-51 --json` (docs/scheduler.md).
Run: .venv/bin/python benchmarks/scheduler_trace.py [--policy gpupool] [--seed 42] [--trace default]
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from controlplane.scheduler import replay, tracefile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alibaba-gpu-v2023"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="gpupool")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--trace", default="default")
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--repeat", type=int, default=3, help="replays; the best one is reported")
    args = ap.parse_args()
    nodes = tracefile.load_nodes(args.data / "openb_node_list_gpu_node.csv")
    pods = tracefile.load_pods(args.data / f"openb_pod_list_{args.trace}.csv")
    runs = [replay.run(nodes, pods, args.policy, args.seed) for _ in range(args.repeat)]
    result = min(runs, key=lambda r: r.seconds)
    summary = replay.summarize([result], args.policy, f"openb_pod_list_{args.trace}")
    cpu_best = replay.summarize([min(runs, key=lambda r: r.cpu_seconds)], args.policy, args.trace)
    print(json.dumps({
        "benchmark": "scheduler_trace", "policy": args.policy, "trace": args.trace,
        "seed": args.seed, "nodes": len(nodes), "pods_replayed": result.placed + result.failed,
        "placements_per_s": summary["placements_per_s"],
        "placements_per_cpu_s": cpu_best["placements_per_cpu_s"], "target_per_s": 5000,
        "placements_per_s_all": [replay.summarize([r], args.policy, args.trace)["placements_per_s"]
                                 for r in runs],
        "loadavg_1m": round(os.getloadavg()[0], 2),
        "unallocated_gpu_pct_at_100": summary["unallocated_gpu_pct"]["100"],
    }))


if __name__ == "__main__":
    main()
