"""Plain factory functions for scheduler inputs (tests, benchmarks, snapshot replays)."""

from __future__ import annotations

from controlplane.core.resources import Accelerator, Constraints, Node, Request, SliceGrant
from controlplane.core.snapshot import MemberPlacement, PendingJob, Queue, RunningJob

_seq = iter(range(1, 10**9))


def node(name: str, gpus: int = 8, model: str = "H100-80GB", cpu: int = 64000,
         memory: int = 512000, memory_per_gpu: int = 81559, domains: int = 0,
         cordoned: bool = False, labels: dict[str, str] | None = None) -> Node:
    """A node with ``gpus`` identical accelerators; ``domains`` > 0 splits them into NVLink groups."""
    accs = []
    for i in range(gpus):
        domain = f"nvl{i * domains // gpus}" if domains else None
        accs.append(Accelerator(f"{name}-gpu{i}", name, i, model=model, memory_mib=memory_per_gpu,
                                interconnect_domain=domain,
                                numa_node=(i * 2 // gpus) if gpus > 1 else 0))
    return Node(name, cpu, memory, accs, labels=dict(labels or {}), cordoned=cordoned)


def request(gpus: int = 0, milli: int = 0, cpu: int = 1000, memory: int = 1024, gang: int = 1,
            models: tuple[str, ...] = (), gpu_memory: int = 0) -> Request:
    return Request(cpu, memory, gpus=gpus, gpu_milli=milli, gpu_memory_mib=gpu_memory,
                   constraints=Constraints(models=models), gang=gang)


def pending(job_id: str, queue: str = "default", priority: int = 0, **kw) -> PendingJob:
    return PendingJob(job_id, queue, request(**kw), priority=priority, submitted_seq=next(_seq))


def queue(name: str, guarantee_gpus: float = 0, limit_gpus: float | None = None,
          weight: float = 1.0) -> Queue:
    return Queue(name, team=name, guarantee_milli=int(guarantee_gpus * 1000),
                 limit_milli=None if limit_gpus is None else int(limit_gpus * 1000), weight=weight)


def running(job_id: str, on: Node, queue: str = "default", gpus: int = 0, milli: int = 0,
            cpu: int = 1000, memory: int = 1024, priority: int = 0, started_at: float = 0.0,
            min_runtime_s: float = 0.0, preemptible: bool = True, first_gpu: int = 0) -> RunningJob:
    """A running job occupying ``on`` (its allocations are added to the node)."""
    req = request(gpus=gpus, milli=milli, cpu=cpu, memory=memory)
    grants = []
    for acc in on.accelerators[first_gpu:first_gpu + (gpus or (1 if milli else 0))]:
        take = 1000 if gpus else milli
        mem = acc.memory_mib if gpus else acc.memory_mib * milli // 1000
        acc.allocated_milli += take
        acc.allocated_memory_mib += mem
        grants.append(SliceGrant(acc.uuid, take, mem))
    on.allocated_cpu_milli += cpu
    on.allocated_memory_mib += memory
    member = MemberPlacement(0, on.name, tuple(grants), cpu, memory)
    return RunningJob(job_id, queue, req, (member,), priority=priority, started_at=started_at,
                      min_runtime_s=min_runtime_s, preemptible=preemptible)
