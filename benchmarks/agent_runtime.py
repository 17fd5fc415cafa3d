"""Agent runtime latencies: start order -> STARTED report, exit -> final report, stop -> gone.

Drives the real Runtime (shim, slice env, records on disk) with ``/bin/true``-like jobs on
simulated GPUs, ticking like the agent does. Targets: start p99 <= 250 ms, exit noticed and
reported p99 <= 2 x tick + 100 ms, SIGTERM stop p99 <= 2 x tick + 100 ms. Prints one JSON line.
    .venv/bin/python benchmarks/agent_runtime.py [--jobs 40] [--tick 0.1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.devices.simulated import SimulatedBackend  # noqa: E402
from agent.enforce.mps import MpsController  # noqa: E402
from agent.runtime.manager import Runtime  # noqa: E402
from agent.state import StateDir  # noqa: E402
from controlplane.core.wire import SliceSpec, StartOrder, StatusKind  # noqa: E402


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return round(values[min(len(values) - 1, int(q * len(values)))] * 1000, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=40)
    ap.add_argument("--tick", type=float, default=0.1)
    args = ap.parse_args()
    backend = SimulatedBackend(gpus=8, model="H100-80GB", node="bench")
    uuids = [a.uuid for a in backend.discover()]
    events: dict[str, dict[str, float]] = {}

    def report(kind, job, **_):
        events.setdefault(job.attempt_id, {})[kind.value] = time.monotonic()

    with tempfile.TemporaryDirectory() as tmp:
        rt = Runtime(StateDir(Path(tmp)), node_name="bench", address="127.0.0.1", report=report,
                     mps=MpsController("off", Path(tmp)), backend=backend, log_flush_s=0.0)

        def order(i: int, code: str) -> StartOrder:
            return StartOrder(job_id=f"j{i}", attempt_id=f"a{i}", epoch=1, name="bench",
                              argv=["python", "-c", code], grace_s=5,
                              slices=[SliceSpec(accelerator_uuid=uuids[i % 8], compute_milli=250,
                                                memory_mib=20000, device_memory_mib=81559)])

        start_ms, exit_ms, stop_ms = [], [], []
        for i in range(args.jobs):  # short jobs: start latency and exit detection
            t0 = time.monotonic()
            rt.start(order(i, "pass"))
            start_ms.append(time.monotonic() - t0)
            proc = rt.job(f"a{i}").proc
            while proc.exit_info() is None:
                time.sleep(0.001)
            ended = time.monotonic()
            while "exited" not in events[f"a{i}"]:
                rt.tick()
                time.sleep(args.tick)
            exit_ms.append(events[f"a{i}"]["exited"] - ended)
        for i in range(args.jobs, args.jobs + args.jobs // 2):  # long jobs: stop latency
            rt.start(order(i, "import time; print('up', flush=True); time.sleep(60)"))
            while b"up" not in (rt.job(f"a{i}").job_dir / "stdout.log").read_bytes():
                time.sleep(0.005)
            t0 = time.monotonic()
            rt.stop(f"a{i}", "bench", 5)
            while events[f"a{i}"].get(StatusKind.KILLED.value) is None:
                rt.tick()
                time.sleep(args.tick)
            stop_ms.append(events[f"a{i}"][StatusKind.KILLED.value] - t0)
    print(json.dumps({"jobs": args.jobs, "tick_s": args.tick,
                      "start_p50_ms": pct(start_ms, 0.5), "start_p99_ms": pct(start_ms, 0.99),
                      "exit_report_p50_ms": pct(exit_ms, 0.5), "exit_report_p99_ms": pct(exit_ms, 0.99),
                      "stop_p50_ms": pct(stop_ms, 0.5), "stop_p99_ms": pct(stop_ms, 0.99),
                      "start_mean_ms": round(statistics.mean(start_ms) * 1000, 1)}))


if __name__ == "__main__":
    main()
