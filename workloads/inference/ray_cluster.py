"""A Ray cluster per multi-node inference job: head on rank 0, workers on the other ranks.

Each member runs ``ray start --block`` as its own child, so stopping the job (SIGTERM to the
member) tears its part of the cluster down without touching other Ray clusters on the node.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Mapping


def ray_executable() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.isfile(exe):
        raise ValueError("multi-node inference needs Ray on every node: pip install 'gpupool[workloads-multinode]'")
    return exe


def ray_env(env: Mapping[str, str], job_dir: str) -> dict[str, str]:
    out = dict(env)
    out.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    out.setdefault("RAY_AUTH_MODE", "disabled")
    out.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out.setdefault("RAY_TMPDIR", job_dir)
    return out


def start_argv(rank: int, master_addr: str, master_port: int, *, gpus: int, cpus: int, temp_dir: str,
               exe: str = "ray") -> list[str]:
    """``ray start`` of one member: the head (GCS on MASTER_PORT) on rank 0, a worker elsewhere."""
    common = ["--block", "--disable-usage-stats", f"--num-gpus={gpus}", f"--num-cpus={cpus}"]
    if rank == 0:
        return [exe, "start", "--head", f"--node-ip-address={master_addr}", f"--port={master_port}",
                f"--temp-dir={temp_dir}", "--include-dashboard=false", *common]
    return [exe, "start", f"--address={master_addr}:{master_port}", *common]


def wait_for_nodes(address: str, nodes: int, timeout_s: float = 300.0) -> int:
    """Block until ``nodes`` Ray nodes are alive at ``address``; returns how many are."""
    import ray

    deadline = time.monotonic() + timeout_s
    ray.init(address=address, logging_level="ERROR")
    try:
        while True:
            alive = sum(1 for n in ray.nodes() if n.get("Alive"))
            if alive >= nodes or time.monotonic() > deadline:
                return alive
            time.sleep(1.0)
    finally:
        ray.shutdown()
