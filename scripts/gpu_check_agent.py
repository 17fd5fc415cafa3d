"""GPU check of the agent's device, enforcement and telemetry on one real NVIDIA GPU.

Run through scripts/gpu-check-agent.sh (which owns the work dir and always stops MPS). Every
slice job is a start order run by the agent's own runtime (scripts/gpu_check_runtime.py): its
sandbox (uid, cgroup, device allow-list, when run as root), slice env with the memory contract,
MPS per uid and GPU, telemetry and watchdog. Phases: inventory; solo bf16 matmul throughput;
four 25 % slices under MPS (each >= 0.9 x solo/4); a slice asking past its MPS limit next to
three busy neighbours (refused); an uncapped neighbour growing until held at its slice (MPS);
the watchdog (MPS off) stopping a slice that grows past its limit within 2 s; per-job memory
from telemetry against NVML's per-process figure; a job that unsets CUDA_VISIBLE_DEVICES still
reaching only its own GPU. Prints one JSON summary. Without a GPU it checks imports and a
replayed inventory, says "no NVIDIA GPU" and exits 0 (2 with --require-gpu); --rehearse runs the
same plumbing on a CPU against simulated GPUs. It never changes compute mode, MIG or clocks,
and never resets the GPU.
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

from gpu_check_jobs import ensure_pydantic  # noqa: E402

QUARTER = 250
SHARE_MIN = 0.9 * 0.25  # each quarter slice keeps >= 0.9 x 1/4 of solo
SUM_MIN = 0.95  # the four together >= 0.95 x solo
WATCHDOG_MAX_S = 2.0
TELEMETRY_MAX_ERR_PCT = 5.0


def log(msg: str) -> None:
    print(f"[gpu-check] {msg}", file=sys.stderr, flush=True)


class Check:
    def __init__(self, args: argparse.Namespace, backend) -> None:
        from gpu_check_runtime import SliceRun

        self.args, self.backend = args, backend
        self.work = Path(args.work)
        gpus = [a for a in backend.discover() if a.mig_parent_uuid is None]
        self.gpu = gpus[0] if gpus else backend.discover()[0]
        self.total = self.gpu.memory_mib
        self.slice_mib = self.total // 4
        self.plain = SliceRun(self.work, "plain", backend, mps_mode="off", rehearse=args.rehearse,
                              grace_s=args.grace)
        self.shared = SliceRun(self.work, "mps", backend, mps_mode="managed", rehearse=args.rehearse,
                               grace_s=args.grace)
        self._phase = 0

    def runs(self, run, specs: list[tuple], during=None, started=None) -> list:
        """Start ``specs`` = [(tag, milli, memory_mib, worker_args[, wrapper])] together and run them."""
        from gpu_check_runtime import run_jobs

        self._phase += 1
        go = self.work / f"go-{self._phase}"
        jobs = [run.job(tag, self.gpu, milli, mem, ["--seconds", str(self.args.seconds), *wargs],
                        wrapper=tuple(rest[0]) if rest else (), go_file=go)
                for tag, milli, mem, wargs, *rest in specs]
        if started is not None:
            started(jobs)
        run_jobs(run, jobs, go, seconds=self.args.seconds, during=during, tick_s=self.args.tick)
        return jobs

    @staticmethod
    def shares(jobs, solo: float) -> list[float]:
        return [round((j.summary()["tflops"] or 0) / solo, 3) for j in jobs]

    def direct_usage(self) -> dict[int, float]:
        """pid -> MiB straight from NVML (the simulated backend in a rehearsal)."""
        if self.args.rehearse:
            return {p.pid: p.memory_used_mib for p in self.backend.processes()}
        import pynvml

        handle = pynvml.nvmlDeviceGetHandleByUUID(self.gpu.uuid)
        return {p.pid: (p.usedGpuMemory or 0) / 2**20 for p in pynvml.nvmlDeviceGetComputeRunningProcesses(handle)}

    # ---- phases --------------------------------------------------------------------------------
    def solo(self) -> float:
        (job,) = self.runs(self.plain, [("solo", 1000, self.total, ["--ballast-mib", "1024"])])
        tflops = job.summary()["tflops"]
        if not tflops:
            raise RuntimeError(f"solo run failed: {job.summary()}")
        return tflops

    def mps_quarters(self, solo: float) -> dict:
        jobs = self.runs(self.shared, [(f"q{i}", QUARTER, self.slice_mib, ["--ballast-mib", "1024"])
                                       for i in range(4)])
        shares = self.shares(jobs, solo)
        return {"jobs": [j.summary() for j in jobs], "share_of_solo": shares, "sum_share": round(sum(shares), 3),
                "enforcement": jobs[0].record.get("enforcement"),
                "ok": min(shares) >= SHARE_MIN and sum(shares) >= SUM_MIN}

    def mps_refusal(self, solo: float) -> dict:
        ask = self.slice_mib + 4096
        jobs = self.runs(self.shared, [*[(f"n{i}", QUARTER, self.slice_mib, ["--ballast-mib", "1024"])
                                         for i in range(3)],
                                       ("over", QUARTER, self.slice_mib,
                                        ["--mode", "refuse", "--ballast-mib", "512", "--ask-mib", str(ask)])])
        *neighbours, offender = jobs
        shares = self.shares(neighbours, solo)
        refused = offender.event("oom") is not None
        return {"limit_mib": self.slice_mib, "asked_mib": ask, "refused": refused,
                "offender": offender.summary(), "neighbour_share_of_solo": shares,
                "limit_env": (offender.record.get("enforcement") or {}).get("mps"),
                "ok": refused and min(shares) >= SHARE_MIN}

    def uncapped_neighbour(self, solo: float) -> dict:
        """A job with no framework cap grows by 2 GiB steps: MPS must hold it at its slice."""
        jobs = self.runs(self.shared, [*[(f"c{i}", QUARTER, self.slice_mib, ["--ballast-mib", "1024"])
                                         for i in range(3)],
                                       ("greedy", QUARTER, self.slice_mib,
                                        ["--mode", "ramp", "--ballast-mib", "1024", "--step-mib", "2048",
                                         "--step-every-s", "0.25", "--limit-mib", str(self.slice_mib),
                                         "--max-mib", str(self.total)])])
        *neighbours, greedy = jobs
        oom = greedy.event("oom")
        held = oom["ballast_mib"] if oom else None
        shares = self.shares(neighbours, solo)
        return {"limit_mib": self.slice_mib, "held_at_ballast_mib": held, "refusal": oom and oom["error"],
                "stopped_reason": (greedy.record.get("stop") or {}).get("reason"),
                "neighbour_share_of_solo": shares,
                "ok": held is not None and held <= self.slice_mib and min(shares) >= SHARE_MIN}

    def watchdog_and_telemetry(self, solo: float) -> tuple[dict, dict]:
        ballasts = [2048, 3072, 4096]
        state: dict = {"telemetry": []}
        started = time.monotonic()

        def during() -> None:
            snap = self.plain.latest
            if not state["telemetry"] and snap is not None and time.monotonic() - started > 2.0:
                state["telemetry"] = self._compare(snap, neighbours) or []

        specs = [*[(f"w{i}", QUARTER, self.slice_mib, ["--ballast-mib", str(b)]) for i, b in enumerate(ballasts)],
                 ("ramp", QUARTER, self.slice_mib,
                  ["--mode", "ramp", "--ballast-mib", "1024", "--step-mib", "2048", "--step-every-s", "0.25",
                   "--limit-mib", str(self.slice_mib), "--max-mib", str(self.slice_mib + 8192)])]
        neighbours: list = []
        jobs = self.runs(self.plain, specs, during, started=lambda js: neighbours.extend(js[:-1]))
        offender = jobs[-1]
        cross = offender.event("cross")
        stopped_after = None if cross is None or offender.stopped_at is None else offender.stopped_at - cross["t"]
        reason = (offender.record.get("stop") or {}).get("reason")
        shares = self.shares(neighbours, solo)
        watchdog = {"limit_mib": self.slice_mib, "grace_s": self.args.grace, "tick_s": self.args.tick,
                    "crossed_nvml_mib": cross and cross["nvml_mib"], "reason": reason,
                    "stopped_after_crossing_s": None if stopped_after is None else round(stopped_after, 3),
                    "neighbour_share_of_solo": shares, "offender_exit_code": offender.exit_code,
                    "ok": stopped_after is not None and stopped_after <= WATCHDOG_MAX_S
                    and bool(reason and reason.startswith("slice memory exceeded")) and min(shares) >= SHARE_MIN}
        rows = state["telemetry"]
        telemetry = {"per_job": rows, "ok": len(rows) == len(ballasts)
                     and all(r["error_pct"] is not None and r["error_pct"] <= TELEMETRY_MAX_ERR_PCT for r in rows)}
        return watchdog, telemetry

    def _compare(self, snap, neighbours: list) -> list[dict] | None:
        """Per-job memory from telemetry vs NVML direct; None until every neighbour shows in both."""
        direct = self.direct_usage()
        rows = []
        for job in neighbours:
            report = next((r for r in snap.slices if r.attempt_id == job.attempt), None)
            # the simulated backend knows the job's root (the runtime attaches it); NVML the worker
            nvml_mib = direct.get(job.record.get("child_pid") if self.args.rehearse else job.worker_pid)
            if report is None or not nvml_mib or not report.memory_used_mib:
                return None  # not attached or not sampled yet: compare on a later tick
            err = round(abs(report.memory_used_mib - nvml_mib) / nvml_mib * 100, 2)
            rows.append({"job": job.tag, "telemetry_mib": report.memory_used_mib,
                         "nvml_mib": round(nvml_mib, 1), "error_pct": err})
        return rows

    def escape(self) -> dict:
        """A job that unsets CUDA_VISIBLE_DEVICES: still only its own GPU (device cgroup)."""
        other = max(self.backend.device_minors().values(), default=0) + 1
        standin = self.work / f"standin-nvidia{other}"
        probes: list[str] = []
        if os.geteuid() == 0:
            standin.unlink(missing_ok=True)
            os.mknod(standin, 0o20666, os.makedev(195, other))  # another GPU's node, as /dev/nvidia<other>
            os.chmod(standin, 0o666)
            probes = [str(standin)]
        (job,) = self.runs(self.plain, [("escape", QUARTER, self.slice_mib,
                                         ["--mode", "escape", *(a for p in probes for a in ("--probe-node", p))],
                                         ("env", "-u", "CUDA_VISIBLE_DEVICES"))])
        reach = job.event("reach") or {}
        usable = [a for a in reach.get("allocations", []) if not str(a).startswith("refused")]
        node = (reach.get("nodes") or {}).get(str(standin))
        sandboxed = self.plain.sandbox.enabled
        return {"visible_env": reach.get("visible"), "device_count": reach.get("device_count"),
                "allocations": reach.get("allocations"), "other_gpu_node": node, "sandbox": sandboxed,
                "devices": (job.record.get("enforcement") or {}).get("devices"),
                "ok": bool(reach) and sandboxed and node == "Operation not permitted"
                and (self.args.rehearse or len(usable) == 1)}


def dry_run(reason: str, pydantic_from: str) -> dict:
    """No GPU: prove the pieces import and parse a replayed H100, and say why nothing ran."""
    from agent.devices import open_backend
    from agent.enforce.watchdog import MemoryWatchdog  # noqa: F401  (import check)
    from agent.telemetry import TelemetrySampler

    out = {"ok": None, "mode": "dry", "gpu": False, "reason": f"no NVIDIA GPU: {reason}", "pydantic": pydantic_from}
    try:
        from tests.support.nvml_replay import FIXTURES, replay_module

        if FIXTURES.exists():
            backend = open_backend("nvml", nvml=replay_module())
            snap = TelemetrySampler(backend).sample()
            out["replayed_inventory"] = [a.model_dump() for a in snap.accelerators]
    except ImportError as exc:
        out["replayed_inventory"] = f"skipped: {exc}"
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description="gpupool agent GPU check (use scripts/gpu-check-agent.sh)")
    ap.add_argument("--work", required=True, help="scratch dir (agent state, job dirs, MPS pipes live under it)")
    ap.add_argument("--seconds", type=float, default=8.0, help="measurement window per phase")
    ap.add_argument("--grace", type=float, default=1.0, help="watchdog grace (the agent's default)")
    ap.add_argument("--tick", type=float, default=0.2, help="agent tick: supervision, telemetry, watchdog")
    ap.add_argument("--require-gpu", action="store_true", help="exit 2 instead of 0 when there is no GPU")
    ap.add_argument("--out", help="also write the JSON summary here")
    ap.add_argument("--rehearse", action="store_true",
                    help="no GPU: simulated backend and GPU-less workers, to test the plumbing on a CPU")
    args = ap.parse_args()
    t0 = time.monotonic()
    pydantic_from = ensure_pydantic(Path(args.work) / "pydeps")
    from agent.devices import BackendUnavailable, open_backend

    try:
        backend = open_backend("simulate:1xH100-80GB", node="gpu-check") if args.rehearse else open_backend("nvml")
    except BackendUnavailable as exc:
        summary = dry_run(str(exc), pydantic_from)
        return finish(summary, args, t0, 2 if args.require_gpu else 0)
    check = Check(args, backend)
    summary: dict = {"ok": False, "mode": "rehearsal" if args.rehearse else "gpu", "pydantic": pydantic_from,
                     "device": check.gpu.model_dump(), "inventory": [a.model_dump() for a in backend.discover()],
                     "first_sample": backend.sample()[0].model_dump(),
                     "sandbox": check.plain.sandbox.reason or "on"}
    try:
        log(f"inventory: {[a.name for a in backend.discover()]}; sandbox {summary['sandbox']}; solo run")
        solo = summary["solo_tflops"] = check.solo()
        settings = check.shared.mps.settings()
        summary["mps"] = {"mode": settings.mode, "available": settings.available, "detail": settings.detail}
        if settings.available:
            log("four 25% slices under MPS")
            summary["mps_quarters"] = check.mps_quarters(solo)
            log("slice past its MPS memory limit")
            summary["mps_memory_limit"] = check.mps_refusal(solo)
            log("uncapped neighbour growing past its slice")
            summary["uncapped_neighbour"] = check.uncapped_neighbour(solo)
        check.shared.mps.stop()
        log("watchdog (MPS off) and telemetry")
        summary["watchdog"], summary["telemetry"] = check.watchdog_and_telemetry(solo)
        log("job that unsets CUDA_VISIBLE_DEVICES")
        summary["escape"] = check.escape()
        parts = ["watchdog", "telemetry"] if args.rehearse else [
            "mps_quarters", "mps_memory_limit", "uncapped_neighbour", "watchdog", "telemetry", "escape"]
        summary["ok"] = all(summary.get(p, {}).get("ok") for p in parts)
    except Exception as exc:  # report what ran so far; MPS is stopped below and by the shell trap
        summary["error"] = f"{type(exc).__name__}: {exc}"
    finally:
        for run in (check.shared, check.plain):
            run.close()
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
