"""`gpupool whatif` on the whole default trace: seconds per mode (target < 60), one JSON line.

Each mode runs what the command runs — the search for the smallest cluster, every replay
through ``controlplane.scheduler.schedule`` — on the 8,152-pod, 150-day default trace.
Wall and CPU seconds per mode (CPU: honest when other work shares the two cores).
Run: nice -n 10 .venv/bin/python benchmarks/whatif.py [--trace default] [--modes pooled,...]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from controlplane.whatif.modes import MODES
from controlplane.whatif.report import whatif
from controlplane.whatif.trace import default_paths, load_trace

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "alibaba-gpu-v2023"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trace", default="default")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--compress", type=float, default=1.0)
    ap.add_argument("--data", type=Path, default=DATA)
    args = ap.parse_args()
    pods = args.data / f"openb_pod_list_{args.trace}.csv"
    started, cpu = time.perf_counter(), time.process_time()
    workload = load_trace(pods, usage=default_paths(pods)[1]).compressed(args.compress)
    line = {"benchmark": "whatif", "trace": args.trace, "compress": args.compress,
            "pods": sum(workload.excluded.values()) + len(workload.jobs),
            "jobs_replayed": len(workload.jobs), "span_days": round(workload.span_s / 86400, 1),
            "load_s": round(time.perf_counter() - started, 2),
            "load_cpu_s": round(time.process_time() - cpu, 2), "target_s_per_mode": 60, "modes": {}}
    for mode in args.modes.split(","):
        started, cpu = time.perf_counter(), time.process_time()
        report, _ = whatif(workload, [mode])
        figures = report["modes"][mode]
        replays = figures["replays"]
        calls = sum(r["schedule_calls"] for r in replays)
        cpu_s = time.process_time() - cpu
        line["modes"][mode] = {
            "gpus": figures["gpus"], "seconds": round(time.perf_counter() - started, 2),
            "cpu_seconds": round(cpu_s, 2), "replays": len(replays),
            "full_replays": sum(r["finished"] for r in replays), "schedule_calls": calls,
            "schedule_calls_per_cpu_s": round(calls / max(cpu_s, 1e-9), 1)}
    print(json.dumps(line))


if __name__ == "__main__":
    main()
