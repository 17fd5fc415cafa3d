"""GPU check of the agent's device, enforcement and telemetry pieces on one real NVIDIA GPU.

Run through scripts/gpu-check-agent.sh (which owns the work dir and always stops MPS). Phases:
inventory (NvmlBackend), solo bf16 matmul throughput, four 25 % slices under managed MPS, a slice
asking past its MPS pinned-memory limit next to three busy neighbours, the memory watchdog
(MPS off) stopping a slice that grows past its limit while three neighbours run, and per-job
memory from the agent's telemetry against NVML's per-process figure. Prints one JSON summary.
Without a GPU it checks imports and a replayed inventory, says "no NVIDIA GPU" and exits 0
(2 with --require-gpu). It never changes compute mode, MIG or clocks, and never resets the GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from gpu_check_jobs import Job, ensure_pydantic, run_jobs  # noqa: E402

QUARTER = 250
SHARE_MIN = 0.9 * 0.25  # each quarter slice keeps >= 0.9 x 1/4 of solo
SUM_MIN = 0.95  # the four together >= 0.95 x solo
WATCHDOG_MAX_S = 2.0
TELEMETRY_MAX_ERR_PCT = 5.0


def log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


class Check:
    def __init__(self, args: argparse.Namespace, backend) -> None:
        from agent.enforce.env import MpsSettings, inherited_env, slice_env
        from controlplane.core.wire import SliceSpec, StartOrder

        self.args, self.backend = args, backend
        self.work = Path(args.work)
        self._slice_env, self._inherited, self._MpsSettings = slice_env, inherited_env, MpsSettings
        self._SliceSpec, self._StartOrder = SliceSpec, StartOrder
        gpus = [a for a in backend.discover() if a.mig_parent_uuid is None]
        self.gpu = gpus[0] if gpus else backend.discover()[0]
        self.total = self.gpu.memory_mib
        self.slice_mib = self.total // 4
        self.off = MpsSettings(mode="off", detail="gpu-check phase without MPS")
        self.enforcement: dict[str, dict] = {}

    def order(self, tag: str, milli: int, memory_mib: int):
        spec = self._SliceSpec(accelerator_uuid=self.gpu.uuid, compute_milli=milli, memory_mib=memory_mib,
                               device_memory_mib=self.total)
        return self._StartOrder(job_id=f"job-{tag}", attempt_id=f"att-{tag}", epoch=1, name=tag,
                                argv=["python"], slices=[spec])

    def job(self, tag: str, mps, worker_args: list[str], *, milli: int = QUARTER, memory_mib: int | None = None):
        order = self.order(tag, milli, self.slice_mib if memory_mib is None else memory_mib)
        built = self._slice_env(order, node="gpu-check", ports=[], master_port=29500,
                                output_dir=str(self.work / tag), mps=mps, watchdog_grace_s=self.args.grace)
        env = {**self._inherited(dict(os.environ)), **built.env}
        if mps.mode == "off":  # never join an MPS daemon someone else runs at the default pipe
            env["CUDA_MPS_PIPE_DIRECTORY"] = str(self.work / "no-mps")
        if self.args.rehearse:
            env.update(GPUCHECK_REHEARSAL="1", GPUPOOL_SIM_MEMORY_FILE=str(self.work / f"{tag}.mem"))
        self.enforcement[tag] = built.enforcement
        return Job(tag, ["--seconds", str(self.args.seconds), *worker_args], env)

    def attach(self, jobs: list[Job]) -> None:
        """Rehearsal only: tell the simulated backend which pid runs on which slice."""
        if not self.args.rehearse:
            return
        for job in jobs:
            self.backend.attach(job.worker_pid, self.gpu.uuid, QUARTER, self.slice_mib,
                                memory_file=str(self.work / f"{job.tag}.mem"), used_mib=0)

    def direct_usage(self) -> dict[int, float]:
        """pid -> MiB straight from NVML (the simulated backend in a rehearsal)."""
        if self.args.rehearse:
            return {p.pid: p.memory_used_mib for p in self.backend.processes()}
        import pynvml

        handle = pynvml.nvmlDeviceGetHandleByUUID(self.gpu.uuid)
        return {p.pid: (p.usedGpuMemory or 0) / 2**20 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}

    # ---- phases --------------------------------------------------------------------------------
    def solo(self) -> float:
        job = self.job("solo", self.off, ["--ballast-mib", "1024"], milli=1000, memory_mib=self.total)
        run_jobs([job], seconds=self.args.seconds, on_ready=self.attach)
        tflops = job.summary()["tflops"]
        if not tflops:
            raise RuntimeError(f"solo run failed: {job.summary()}")
        return tflops

    def mps_quarters(self, mps, solo: float) -> dict:
        jobs = [self.job(f"q{i}", mps, ["--ballast-mib", "1024"]) for i in range(4)]
        run_jobs(jobs, seconds=self.args.seconds)
        shares = [round((j.summary()["tflops"] or 0) / solo, 3) for j in jobs]
        return {"jobs": [j.summary() for j in jobs], "share_of_solo": shares, "sum_share": round(sum(shares), 3),
                "enforcement": self.enforcement["q0"],
                "ok": min(shares) >= SHARE_MIN and sum(shares) >= SUM_MIN}

    def mps_refusal(self, mps, solo: float) -> dict:
        ask = self.slice_mib + 4096
        neighbours = [self.job(f"n{i}", mps, ["--ballast-mib", "1024"]) for i in range(3)]
        offender = self.job("over", mps, ["--mode", "refuse", "--ballast-mib", "512", "--ask-mib", str(ask)])
        run_jobs([*neighbours, offender], seconds=self.args.seconds)
        shares = [round((j.summary()["tflops"] or 0) / solo, 3) for j in neighbours]
        refused = offender.event("oom") is not None
        return {"limit_mib": self.slice_mib, "asked_mib": ask, "refused": refused,
                "offender": offender.summary(), "neighbour_share_of_solo": shares,
                "limit_env": self.enforcement["over"].get("mps"),
                "ok": refused and min(shares) >= SHARE_MIN}

    def watchdog_and_telemetry(self, solo: float) -> tuple[dict, dict]:
        from agent.enforce.watchdog import MemoryWatchdog
        from agent.telemetry import ManagedJob, TelemetrySampler

        ballasts = [2048, 3072, 4096]
        neighbours = [self.job(f"w{i}", self.off, ["--ballast-mib", str(b)]) for i, b in enumerate(ballasts)]
        offender = self.job("ramp", self.off, [
            "--mode", "ramp", "--ballast-mib", "1024", "--step-mib", "2048", "--step-every-s", "0.25",
            "--limit-mib", str(self.slice_mib), "--max-mib", str(self.slice_mib + 8192)])
        jobs = [*neighbours, offender]
        spec = self.order("x", QUARTER, self.slice_mib).slices[0]
        managed = [ManagedJob(f"job-{j.tag}", f"att-{j.tag}", frozenset({j.proc.pid}), (spec,)) for j in jobs]
        live = {f"att-{j.tag}": j for j in jobs}
        sampler = TelemetrySampler(self.backend, lambda: [m for m in managed if live[m.attempt_id].proc.poll() is None])
        dog = MemoryWatchdog(grace_s=self.args.grace)
        limits = {(m.attempt_id, self.gpu.uuid): float(self.slice_mib) for m in managed}
        state: dict = {"violation": None, "telemetry": []}
        started = time.monotonic()

        def during() -> None:
            snap = sampler.sample()
            usage = {(r.attempt_id, r.accelerator_uuid): r.memory_used_mib for r in snap.slices}
            for v in dog.check(usage, limits):
                live[v.attempt_id].stop()
                state["violation"] = {"attempt": v.attempt_id, "used_mib": v.used_mib, "over_for_s": round(v.over_for_s, 3)}
            if not state["telemetry"] and time.monotonic() - started > 2.0:
                state["telemetry"] = self._compare(snap, neighbours)

        run_jobs(jobs, seconds=self.args.seconds, during=during, on_ready=self.attach, tick_s=self.args.tick)
        cross = offender.event("cross")
        stopped_after = None if cross is None or offender.stopped_at is None else offender.stopped_at - cross["t"]
        shares = [round((j.summary()["tflops"] or 0) / solo, 3) for j in neighbours]
        watchdog = {"limit_mib": self.slice_mib, "grace_s": self.args.grace, "tick_s": self.args.tick,
                    "crossed_nvml_mib": cross and cross["nvml_mib"], "violation": state["violation"],
                    "stopped_after_crossing_s": None if stopped_after is None else round(stopped_after, 3),
                    "neighbour_share_of_solo": shares, "offender_exit_code": offender.proc.returncode,
                    "ok": stopped_after is not None and stopped_after <= WATCHDOG_MAX_S
                    and state["violation"] is not None and min(shares) >= SHARE_MIN}
        rows = state["telemetry"]
        telemetry = {"per_job": rows, "ok": len(rows) == len(neighbours)
                     and all(r["error_pct"] is not None and r["error_pct"] <= TELEMETRY_MAX_ERR_PCT for r in rows)}
        return watchdog, telemetry

    def _compare(self, snap, neighbours: list[Job]) -> list[dict]:
        """Per-job memory from telemetry (attributed through the job's process tree) vs NVML direct."""
        direct = self.direct_usage()
        rows = []
        for job in neighbours:
            report = next(r for r in snap.slices if r.attempt_id == f"att-{job.tag}")
            nvml_mib = direct.get(job.worker_pid)
            err = None if not nvml_mib else round(abs(report.memory_used_mib - nvml_mib) / nvml_mib * 100, 2)
            rows.append({"job": job.tag, "telemetry_mib": report.memory_used_mib,
                         "nvml_mib": None if nvml_mib is None else round(nvml_mib, 1), "error_pct": err})
        return rows


def dry_run(reason: str, pydantic_from: str) -> dict:
    """No GPU: prove the pieces import and parse a replayed H100, and say why nothing ran."""
    from agent.devices import open_backend
    from agent.enforce.watchdog import MemoryWatchdog  # noqa: F401  (import check)
    from agent.telemetry import TelemetrySampler

    out = {"ok": None, "mode": "dry", "gpu": False, "reason": f"no NVIDIA GPU: {reason}", "pydantic": pydantic_from}
    try:
        from agent.devices.nvml_replay import FIXTURES, replay_module

        if FIXTURES.exists():
            backend = open_backend("nvml", nvml=replay_module())
            snap = TelemetrySampler(backend).sample()
            out["replayed_inventory"] = [a.model_dump() for a in snap.accelerators]
    except ImportError as exc:
        out["replayed_inventory"] = f"skipped: {exc}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="gpupool agent GPU check (use scripts/gpu-check-agent.sh)")
    ap.add_argument("--work", required=True, help="scratch dir (MPS pipe/log dirs live under it)")
    ap.add_argument("--seconds", type=float, default=8.0, help="measurement window per phase")
    ap.add_argument("--grace", type=float, default=1.0, help="watchdog grace (the agent's default)")
    ap.add_argument("--tick", type=float, default=0.2, help="watchdog/telemetry period")
    ap.add_argument("--require-gpu", action="store_true", help="exit 2 instead of 0 when there is no GPU")
    ap.add_argument("--out", help="also write the JSON summary here")
    ap.add_argument("--rehearse", action="store_true",
                    help="no GPU: simulated backend and GPU-less workers, to test the plumbing on a CPU")
    args = ap.parse_args()
    t0 = time.monotonic()
    pydantic_from = ensure_pydantic(Path(args.work) / "pydeps")
    from agent.devices import BackendUnavailable, open_backend
    from agent.enforce.mps import MpsController

    try:
        backend = open_backend("simulate:1xH100-80GB", node="gpu-check") if args.rehearse else open_backend("nvml")
    except BackendUnavailable as exc:
        summary = dry_run(str(exc), pydantic_from)
        return finish(summary, args, t0, 2 if args.require_gpu else 0)
    check = Check(args, backend)
    summary: dict = {"ok": False, "mode": "gpu", "pydantic": pydantic_from, "device": check.gpu.model_dump(),
                     "inventory": [a.model_dump() for a in backend.discover()],
                     "first_sample": backend.sample()[0].model_dump()}
    mps = MpsController("managed", Path(args.work), applicable=not args.rehearse,
                        reason_off="rehearsal: no GPU, no MPS")
    if args.rehearse:
        summary["mode"] = "rehearsal"
    try:
        log(f"inventory: {[a.name for a in backend.discover()]}; solo run")
        solo = summary["solo_tflops"] = check.solo()
        settings = mps.settings()
        summary["mps"] = {"mode": settings.mode, "available": settings.available, "detail": settings.detail,
                          "pipe_dir": settings.pipe_dir}
        if settings.available:
            log("four 25% slices under MPS")
            summary["mps_quarters"] = check.mps_quarters(settings, solo)
            log("slice past its MPS memory limit")
            summary["mps_memory_limit"] = check.mps_refusal(settings, solo)
        mps.stop()
        summary["mps"]["stopped"] = not mps.daemon_running()
        log("watchdog (MPS off) and telemetry")
        summary["watchdog"], summary["telemetry"] = check.watchdog_and_telemetry(solo)
        parts = ["watchdog", "telemetry"] if args.rehearse else ["mps_quarters", "mps_memory_limit", "watchdog",
                                                                  "telemetry"]
        summary["ok"] = all(summary.get(p, {}).get("ok") for p in parts)
    except Exception as exc:  # report what ran so far; MPS is stopped below and by the shell trap
        summary["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        mps.stop()
        backend.close()
    return finish(summary, args, t0, 0 if summary["ok"] else 1)


def finish(summary: dict, args: argparse.Namespace, t0: float, code: int) -> int:
    summary["duration_s"] = round(time.monotonic() - t0, 1)
    text = json.dumps(summary, default=str)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text, flush=True)
    if summary.get("mode") == "dry":
        log(summary["reason"])
    return code


if __name__ == "__main__":
    sys.exit(main())
