"""The policy table of docs/scheduler.md: every visible trace and every constrained variant, for
fgd, bestfit and gpupool, unallocated GPU % at arrived 90/95/100/110 (mean over the seeds).

Build the variants first (benchmarks/scheduler_variants.py). Heavy: about 700 replays for 10
seeds; run it alone, under `nice`. Progress goes to stderr, one markdown row per trace and
policy to stdout as they finish, and one JSON line with every figure at the end.
Run: .venv/bin/python benchmarks/scheduler_table.py --variants build/variants --seeds 42-51
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from controlplane.cli.bench import parse_seeds
from controlplane.scheduler import replay, tracefile

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scheduler_variants import DATA, VARIANTS  # noqa: E402

VISIBLE = ["default", "gpushare20", "gpushare40", "gpushare60", "gpushare80", "gpushare100",
           "multigpu20", "multigpu30", "multigpu40", "multigpu50"]
POLICIES = ["fgd", "bestfit", "gpupool"]
BINS = ("90", "95", "100", "110")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--variants", type=Path, default=Path("build/variants"))
    ap.add_argument("--seeds", default="42-51")
    ap.add_argument("--traces", default="", help="comma-separated subset of trace names")
    ap.add_argument("--policies", default=",".join(POLICIES))
    args = ap.parse_args()
    seeds = parse_seeds(args.seeds)
    traces = [(t, "visible", args.data / f"openb_pod_list_{t}.csv") for t in VISIBLE]
    traces += [(name, role, args.variants / f"openb_pod_list_{name}.csv")
               for name, _, _, _, _, role in VARIANTS]
    if args.traces:
        keep = set(args.traces.split(","))
        traces = [t for t in traces if t[0] in keep]
    nodes = tracefile.load_nodes(args.data / "openb_node_list_gpu_node.csv")
    rows = []
    started, cpu_started = time.perf_counter(), time.process_time()
    for name, role, path in traces:
        pods = tracefile.load_pods(path)
        for policy in args.policies.split(","):
            results = []
            for seed in seeds:
                print(f"{name} {policy} seed {seed}", file=sys.stderr, flush=True)
                results.append(replay.run(nodes, pods, policy, seed))
            summary = replay.summarize(results, policy, name)
            unalloc = summary["unallocated_gpu_pct"]
            rows.append({"trace": name, "role": role, "policy": policy,
                         **{b: unalloc[b] for b in BINS}})
            print(f"| {name} | {role} | {policy} | " + " | ".join(
                f"{unalloc[b]:.2f}" if unalloc[b] is not None else "-" for b in BINS) + " |",
                flush=True)
    print(json.dumps({"benchmark": "scheduler_table", "seeds": seeds, "rows": rows,
                      "wall_s": round(time.perf_counter() - started, 1),
                      "cpu_s": round(time.process_time() - cpu_started, 1)}))


if __name__ == "__main__":
    main()
