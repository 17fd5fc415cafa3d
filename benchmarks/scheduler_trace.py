"""Placement speed on the 1,213-node Alibaba cluster (FGD-paper replay), one JSON line.

Target: >= 1,000 placements/s with the default policy on a 2-core machine. For the full
reproduction figures use `gpupool bench trace ... --seeds 42-51 --json` (docs/scheduler.md).
Run: .venv/bin/python benchmarks/scheduler_trace.py [--policy gpupool] [--seed 42] [--trace default]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from controlplane.scheduler import replay, tracefile

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alibaba-gpu-v2023"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="gpupool")
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--trace", default="default")
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    nodes = tracefile.load_nodes(args.data / "openb_node_list_gpu_node.csv")
    pods = tracefile.load_pods(args.data / f"openb_pod_list_{args.trace}.csv")
    result = replay.run(nodes, pods, args.policy, args.seed)
    summary = replay.summarize([result], args.policy, f"openb_pod_list_{args.trace}")
    print(json.dumps({
        "benchmark": "scheduler_trace", "policy": args.policy, "trace": args.trace,
        "seed": args.seed, "nodes": len(nodes), "pods_replayed": result.placed + result.failed,
        "placements_per_s": summary["placements_per_s"],
        "placements_per_cpu_s": summary["placements_per_cpu_s"], "target_per_s": 1000,
        "unallocated_gpu_pct_at_100": summary["unallocated_gpu_pct"]["100"],
    }))


if __name__ == "__main__":
    main()
