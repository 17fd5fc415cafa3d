"""A Ray cluster per multi-node inference job: head on member 0, workers on the other members.

Each member runs ``ray start --block`` as its own child, so stopping the job (SIGTERM to the
member) tears its part of the cluster down without touching other Ray clusters on the node.
Every port a raylet opens is picked free on the member (two members, or two jobs, may share a
host), and the head checks the cluster by running one task on every node before vLLM starts.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from typing import Any, Mapping

# ray start options whose defaults are fixed ports (52365 ...) that a second raylet on a host would clash on
PORT_FLAGS = ("--node-manager-port", "--object-manager-port", "--runtime-env-agent-port",
              "--dashboard-agent-grpc-port", "--dashboard-agent-listen-port", "--metrics-export-port")
CPU_OBJECT_STORE_BYTES = 256 * 1024 * 1024  # without GPUs the object store only carries small tensors


def ray_executable() -> str:
    exe = os.path.join(os.path.dirname(sys.executable), "ray")
    if not os.path.isfile(exe):
        raise ValueError("multi-node inference needs Ray on every node: pip install 'gpupool[workloads-multinode]'")
    return exe


def ray_env(env: Mapping[str, str], job_dir: str) -> dict[str, str]:
    out = dict(env)
    out.setdefault("RAY_AUTH_MODE", "disabled")
    out.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    out.setdefault("RAY_TMPDIR", job_dir)
    return out


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free on this host now (held open together while picked)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def ray_host(master_addr: str) -> str:
    """The address the job's Ray cluster uses: Ray rewrites 127.0.0.1 and localhost to the host's
    network address, so a gang on one host (a loopback pool) uses another loopback address."""
    return "127.0.0.2" if master_addr in ("127.0.0.1", "localhost") else master_addr


def start_argv(rank: int, master_addr: str, master_port: int, *, gpus: int, cpus: int, temp_dir: str,
               exe: str = "ray", ports: list[int] | None = None, object_store_bytes: int | None = None) -> list[str]:
    """``ray start`` of one member: the head (GCS on MASTER_PORT) on rank 0, a worker elsewhere."""
    host = ray_host(master_addr)
    # workers on random ports: Ray's default worker range (10002-19999) may hold MASTER_PORT
    common = ["--block", "--disable-usage-stats", f"--num-gpus={gpus}", f"--num-cpus={cpus}",
              "--min-worker-port=0", "--max-worker-port=0"]
    if rank == 0 or host.startswith("127."):  # a worker on another host lets Ray pick its own address
        common.append(f"--node-ip-address={host}")
    if ports:  # the head also serves Ray clients, on a port of its own
        flags = PORT_FLAGS + (("--ray-client-server-port",) if rank == 0 else ())
        common += [f"{flag}={port}" for flag, port in zip(flags, ports)]
    if object_store_bytes:
        common.append(f"--object-store-memory={object_store_bytes}")
    if rank == 0:
        return [exe, "start", "--head", f"--port={master_port}", f"--temp-dir={temp_dir}",
                "--include-dashboard=false", *common]
    return [exe, "start", f"--address={host}:{master_port}", *common]


def wait_for_head(host: str, port: int, head: Any, timeout_s: float = 120.0) -> None:
    """Block until the head's GCS accepts connections; ValueError when the head process exits first
    (``ray start`` refused its options or a port) or the time runs out."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise ValueError(f"the Ray head exited with code {head.returncode} before it served {host}:{port} "
                             "(its output is above)")
        try:
            socket.create_connection((host, port), timeout=1.0).close()
            return
        except OSError:
            time.sleep(0.5)
    raise ValueError(f"the Ray head did not serve {host}:{port} within {timeout_s:.0f} s")


def wait_for_nodes(address: str, nodes: int, timeout_s: float = 300.0, node_ip: str | None = None) -> dict[str, Any]:
    """Block until ``nodes`` Ray nodes are alive at ``address``, then run one task on each of them.

    Returns ``{"alive": n, "task_nodes": [node ids that ran the task]}``.
    """
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    deadline = time.monotonic() + timeout_s
    ray.init(address=address, logging_level="ERROR", log_to_driver=False, _node_ip_address=node_ip)
    try:
        while True:
            alive = [n for n in ray.nodes() if n.get("Alive")]
            if len(alive) >= nodes or time.monotonic() > deadline:
                break
            time.sleep(1.0)

        @ray.remote(num_cpus=0)
        def where() -> str:
            return ray.get_runtime_context().get_node_id()

        refs = [where.options(scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)).remote()
                for n in alive]
        ran = ray.get(refs, timeout=max(deadline - time.monotonic(), 30))
        return {"alive": len(alive), "task_nodes": sorted(ran)}
    finally:
        ray.shutdown()
