"""One rank per GPU of a gang member: the member's process starts ``GPUPOOL_NPROC_PER_NODE`` ranks.

The agent starts one process per member with the gang's rendezvous (MASTER_ADDR/PORT,
GPUPOOL_NNODES, GPUPOOL_NODE_RANK, GPUPOOL_NPROC_PER_NODE). Like torchrun's static rendezvous,
this runs the same entry point once per local rank with RANK = node_rank x nproc + local_rank,
LOCAL_RANK, WORLD_SIZE = all GPUs of the job, LOCAL_WORLD_SIZE and NODE_RANK; the ranks of a
node see all of its GPUs (each takes cuda:LOCAL_RANK), so NCCL can use NVLink between them.
Unlike torchrun's agent (which kills workers 30 s after a SIGTERM and exits 1 with a
traceback), it gives the ranks the spec's ``grace_s`` (GPUPOOL_GRACE_S) to checkpoint and
exits 143 when they stopped on request, so a preempted job resumes instead of failing.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from typing import Any

LAUNCHED = "GPUPOOL_LAUNCHED"  # set in each rank: never launch again from inside a rank
PREEMPTED = 143


def rank_env(base: dict[str, str], local_rank: int) -> dict[str, str]:
    """The environment of local rank ``local_rank`` of this member."""
    nproc = int(base.get("GPUPOOL_NPROC_PER_NODE", "1"))
    nnodes = int(base.get("GPUPOOL_NNODES", "1"))
    node = int(base.get("GPUPOOL_NODE_RANK", base.get("NODE_RANK", "0")))
    env = dict(base)
    env.update({LAUNCHED: "1", "RANK": str(node * nproc + local_rank), "LOCAL_RANK": str(local_rank),
                "WORLD_SIZE": str(nnodes * nproc), "LOCAL_WORLD_SIZE": str(nproc), "NODE_RANK": str(node),
                "GROUP_RANK": str(node)})
    env.setdefault("OMP_NUM_THREADS", "1")  # as torchrun: ranks share the node's cores
    return env


def wanted(env: dict[str, str] | None = None) -> bool:
    """True in a member's own process that should start several ranks."""
    env = dict(os.environ) if env is None else env
    return env.get(LAUNCHED) != "1" and int(env.get("GPUPOOL_NPROC_PER_NODE", "1") or 1) > 1


def exit_code(codes: list[int | None]) -> int:
    """A failed rank's code, else 143 when any rank stopped on request, else 0."""
    failed = [c for c in codes if c not in (0, PREEMPTED)]
    if failed:
        return failed[0] if failed[0] is not None and failed[0] > 0 else 1
    return PREEMPTED if PREEMPTED in codes else 0


def launch(module: str, argv: list[str]) -> int:
    """Run ``python -m module argv`` once per local rank; return the member's exit code."""
    base = dict(os.environ)
    nproc = int(base["GPUPOOL_NPROC_PER_NODE"])
    grace = float(base.get("GPUPOOL_GRACE_S", "30") or 30)
    procs = [subprocess.Popen([sys.executable, "-m", module, *argv], env=rank_env(base, i)) for i in range(nproc)]
    stop: dict[str, Any] = {"at": None}

    def on_signal(signum: int, frame: Any) -> None:
        if stop["at"] is None:
            stop["at"] = time.monotonic()
        for p in procs:
            if p.poll() is None:
                p.send_signal(signum)

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    print(f"[node {rank_env(base, 0)['NODE_RANK']}] started {nproc} ranks of {module} "
          f"(world {rank_env(base, 0)['WORLD_SIZE']})", flush=True)
    while any(p.poll() is None for p in procs):
        codes = [p.poll() for p in procs]
        if stop["at"] is None and any(c not in (None, 0, PREEMPTED) for c in codes):
            on_signal(signal.SIGTERM, None)  # one rank failed: the others cannot go on (as torchrun)
        if stop["at"] is not None and time.monotonic() - stop["at"] > grace:
            for p in procs:
                if p.poll() is None:
                    p.kill()
        time.sleep(0.2)
    return exit_code([p.returncode for p in procs])
