"""Agent telemetry overhead: CPU share of one core spent sampling 8 simulated GPUs every second.

Runs the real TelemetrySampler (device samples, per-process usage, attribution of each GPU
process to its job through /proc) and the Prometheus exporter, while another process scrapes
/metrics every second. Target: < 2 % of one core. Prints one JSON line.
    .venv/bin/python benchmarks/agent_overhead.py [--duration 30] [--gpus 8] [--interval 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.devices.simulated import SimulatedBackend  # noqa: E402
from agent.exporter import AgentExporter  # noqa: E402
from agent.telemetry import ManagedJob, TelemetrySampler  # noqa: E402
from controlplane.core.wire import SliceSpec  # noqa: E402

JOB = ("import subprocess, sys, time\n"
       "c = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)'])\n"
       "print(c.pid, flush=True)\n"
       "try:\n    time.sleep(3600)\nfinally:\n    c.kill()\n")
SCRAPER = ("import sys, time, httpx\n"
           "url, n, every = sys.argv[1], 0, float(sys.argv[2])\n"
           "while True:\n"
           "    try:\n        httpx.get(url, timeout=5).raise_for_status(); n += 1\n"
           "    except Exception:\n        pass\n"
           "    print(n, flush=True); time.sleep(every)\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=30.0)
    ap.add_argument("--gpus", type=int, default=8)
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    backend = SimulatedBackend(args.gpus, "H100-80GB", seed=1)
    accs = backend.discover()
    jobs, procs = [], []
    for i, acc in enumerate(accs):  # one job per GPU; its GPU process is the job's child
        root = subprocess.Popen([sys.executable, "-c", JOB], stdout=subprocess.PIPE, text=True)
        child = int(root.stdout.readline())
        procs.append((root, child))
        backend.attach(child, acc.uuid, 500, 40000, used_mib=20000 + i)
        jobs.append(ManagedJob(f"job-{i}", f"att-{i}", frozenset({root.pid}),
                               (SliceSpec(accelerator_uuid=acc.uuid, compute_milli=500, memory_mib=40000,
                                          device_memory_mib=acc.memory_mib),), "q", "team"))
    sampler = TelemetrySampler(backend, lambda: jobs)
    t0 = time.perf_counter()
    for _ in range(20):
        snap = sampler.sample()
    sample_ms = (time.perf_counter() - t0) / 20 * 1000
    assert all(r.memory_used_mib >= 20000 for r in snap.slices), "attribution failed"
    exporter = AgentExporter(lambda: sampler.latest, host="127.0.0.1", port=0)
    port = exporter.start()
    scraper = subprocess.Popen([sys.executable, "-c", SCRAPER, f"http://127.0.0.1:{port}/metrics",
                                str(args.interval)], stdout=subprocess.PIPE, text=True)
    try:
        cpu0, wall0 = time.process_time(), time.monotonic()
        sampler.start(args.interval)
        time.sleep(args.duration)
        sampler.stop()
        cpu, wall = time.process_time() - cpu0, time.monotonic() - wall0
    finally:
        scraper.kill()
        scrapes = [line for line in scraper.stdout.read().split() if line.isdigit()]
        exporter.stop()
        for root, child in procs:
            root.kill()
            root.wait()
            try:
                os.kill(child, 9)
            except ProcessLookupError:
                pass
    pct = 100.0 * cpu / wall
    print(json.dumps({
        "benchmark": "agent_overhead", "gpus": args.gpus, "jobs": len(jobs), "interval_s": args.interval,
        "duration_s": round(wall, 1), "cpu_s": round(cpu, 3), "cpu_pct_of_one_core": round(pct, 3),
        "sample_ms": round(sample_ms, 2), "scrapes": int(scrapes[-1]) if scrapes else 0,
        "sampler_errors": sampler.errors, "target_pct": 2.0, "ok": pct < 2.0 and sampler.errors == 0,
    }))


if __name__ == "__main__":
    main()
