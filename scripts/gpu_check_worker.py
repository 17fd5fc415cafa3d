"""One slice's load for scripts/gpu-check-agent.sh: bf16 matmuls, and optionally too much memory.

Needs only torch (CUDA) and nvidia-ml-py. Talks to the check by lines "GPUCHECK {json}" on
stdout (the agent's runtime captures them in the job's log); after warm-up it says "ready" and
waits for the file $GPUCHECK_GO_FILE (or "go" on stdin), so all slices measure the same window.
Modes: load (steady matmuls), refuse (asks for --ask-mib once, expects an OOM refusal), ramp
(grows its memory by --step-mib until stopped or refused; says "cross" when NVML shows it over
--limit-mib), escape (counts the GPUs it can use and opens --probe-node paths, to show that
unsetting CUDA_VISIBLE_DEVICES gains nothing).
It never applies the framework memory cap: the point is to see MPS or the watchdog stop it.
With GPUCHECK_REHEARSAL=1 it uses no GPU: "memory" is a number written to
$GPUPOOL_SIM_MEMORY_FILE for the simulated backend, so the plumbing can be tested on a CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

N = 4096
MIB = 1024 * 1024


def say(event: str, **fields) -> None:
    print("GPUCHECK " + json.dumps({"event": event, "pid": os.getpid(), **fields}), flush=True)


class OutOfMemory(Exception):
    pass


class CudaDevice:
    """The real thing: torch on the one visible GPU, NVML for this process's own usage."""

    def __init__(self) -> None:
        import torch

        self.torch = torch
        self.dev = torch.device("cuda:0")
        self.a = torch.randn(N, N, dtype=torch.bfloat16, device=self.dev)
        self.b = torch.randn(N, N, dtype=torch.bfloat16, device=self.dev)
        self.flops_per_op = 2 * N**3
        self._nvml = self._handle = None

    def alloc(self, mib: int):
        try:
            t = self.torch.empty(mib * MIB, dtype=self.torch.uint8, device=self.dev)
            t.fill_(1)
            self.torch.cuda.synchronize()
            return t
        except self.torch.OutOfMemoryError as exc:
            raise OutOfMemory(str(exc).splitlines()[0][:300]) from None

    def ops(self, n: int) -> None:
        for _ in range(n):
            self.a @ self.b
        self.torch.cuda.synchronize()

    def own_used_mib(self) -> float | None:
        if self._nvml is None:
            import pynvml

            pynvml.nvmlInit()
            uuid = os.environ.get("GPUPOOL_ACCELERATOR_UUIDS", "").split(",")[0]
            self._nvml, self._handle = pynvml, pynvml.nvmlDeviceGetHandleByUUID(uuid)
        try:
            for p in self._nvml.nvmlDeviceGetComputeRunningProcesses(self._handle):
                if p.pid == os.getpid() and p.usedGpuMemory is not None:
                    return p.usedGpuMemory / MIB
        except self._nvml.NVMLError:
            return None
        return None

    def reserved_mib(self) -> float:
        return self.torch.cuda.memory_reserved() / MIB

    def reach(self) -> dict:
        """How many GPUs this process can see, and on which an allocation succeeds."""
        torch, usable = self.torch, []
        for i in range(torch.cuda.device_count()):
            try:
                torch.empty(256 * MIB, dtype=torch.uint8, device=f"cuda:{i}").fill_(1)
                torch.cuda.synchronize(i)
                usable.append(torch.cuda.get_device_properties(i).name)
            except Exception as exc:  # noqa: BLE001 - any refusal is what we look for
                usable.append(f"refused: {str(exc).splitlines()[0][:120]}")
        return {"device_count": torch.cuda.device_count(), "allocations": usable}


class RehearsalDevice:
    """No GPU: memory is bookkeeping published through GPUPOOL_SIM_MEMORY_FILE; ops just sleep."""

    CONTEXT_MIB = 500

    def __init__(self) -> None:
        self.used = float(self.CONTEXT_MIB)
        self.path = os.environ.get("GPUPOOL_SIM_MEMORY_FILE")
        self.flops_per_op = 2 * N**3
        self._publish()

    def _publish(self) -> None:
        if self.path:
            tmp = f"{self.path}.tmp"
            with open(tmp, "w") as f:
                f.write(str(self.used))
            os.replace(tmp, self.path)

    def alloc(self, mib: int):
        self.used += mib
        self._publish()
        return mib

    def ops(self, n: int) -> None:
        time.sleep(0.002 * n)

    def own_used_mib(self) -> float:
        return self.used

    def reserved_mib(self) -> float:
        return self.used - self.CONTEXT_MIB

    def reach(self) -> dict:
        return {"device_count": None, "allocations": []}


def probe(paths: list[str]) -> dict[str, str]:
    """Open each device node: 'opened', or the error (EPERM = the cgroup refused it)."""
    out = {}
    for path in paths:
        try:
            os.close(os.open(path, os.O_RDWR))
            out[path] = "opened"
        except OSError as exc:
            out[path] = os.strerror(exc.errno)
    return out


def wait_for_go() -> bool:
    go = os.environ.get("GPUCHECK_GO_FILE")
    if not go:
        return sys.stdin.readline().strip() == "go"
    while not os.path.exists(go):
        time.sleep(0.005)
    return True


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--tag", required=True)
    ap.add_argument("--mode", choices=["load", "refuse", "ramp", "escape"], default="load")
    ap.add_argument("--probe-node", action="append", default=[], help="escape: device nodes to open")
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--ballast-mib", type=int, default=1024)
    ap.add_argument("--ask-mib", type=int, default=0)
    ap.add_argument("--limit-mib", type=int, default=0)
    ap.add_argument("--step-mib", type=int, default=2048)
    ap.add_argument("--step-every-s", type=float, default=0.25)
    ap.add_argument("--max-mib", type=int, default=1 << 30, help="ramp: stop growing at this ballast")
    args = ap.parse_args()

    dev = RehearsalDevice() if os.environ.get("GPUCHECK_REHEARSAL") == "1" else CudaDevice()
    ballast = [dev.alloc(args.ballast_mib)]
    ballast_mib = args.ballast_mib
    dev.ops(50)  # warm-up
    if args.mode == "ramp":
        dev.own_used_mib()  # open NVML before the clock starts
    say("ready", tag=args.tag)
    if not wait_for_go():
        return 4
    if args.mode == "escape":
        say("reach", tag=args.tag, visible=os.environ.get("CUDA_VISIBLE_DEVICES"), nodes=probe(args.probe_node),
            **dev.reach())
    count, crossed, asked, held = 0, False, False, False
    t0 = time.perf_counter()
    next_step = t0 + args.step_every_s
    # A growing job only ends when something stops it (or 10 s after the others' window).
    window = args.seconds + 10 if args.mode == "ramp" else args.seconds
    while (now := time.perf_counter()) - t0 < window:
        dev.ops(10)
        count += 10
        if args.mode == "refuse" and not asked and now - t0 > 1.0:
            asked = True
            try:
                ballast.append(dev.alloc(args.ask_mib))
                say("allocated", tag=args.tag, mib=args.ask_mib)
            except OutOfMemory as exc:
                say("oom", tag=args.tag, asked_mib=args.ask_mib, error=str(exc))
                return 3
        if args.mode == "ramp" and now >= next_step and not held:
            next_step = now + args.step_every_s
            try:
                ballast.append(dev.alloc(args.step_mib))
                ballast_mib += args.step_mib
            except OutOfMemory as exc:
                held = True
                say("oom", tag=args.tag, error=str(exc), ballast_mib=ballast_mib,
                    reserved_mib=round(dev.reserved_mib(), 1))
            held = held or ballast_mib >= args.max_mib
            used = dev.own_used_mib()
            if not crossed and used is not None and used > args.limit_mib:
                crossed = True
                say("cross", tag=args.tag, t=time.time(), nvml_mib=round(used, 1))
    elapsed = time.perf_counter() - t0
    say("result", tag=args.tag, tflops=round(count * dev.flops_per_op / elapsed / 1e12, 1),
        seconds=round(elapsed, 2), reserved_mib=round(dev.reserved_mib(), 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
