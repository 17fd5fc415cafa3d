"""Start orders: argv, env, ports and readiness from the job's stored spec through workloads.launch."""

from __future__ import annotations

import logging

from controlplane.core import wire
from controlplane.db.models import AttemptRow, JobRow, MemberRow
from workloads.launch import build_launch

log = logging.getLogger(__name__)


def build_start(job: JobRow, attempt: AttemptRow, member: MemberRow, slices: list[wire.SliceSpec],
                epoch: int, master_addr: str, identity: wire.JobIdentity) -> wire.StartOrder:
    """The start order of one member, from the normalised spec stored at submit (never re-parsed)."""
    spec = job.spec
    nnodes = int((spec.get("resources") or {}).get("nodes", 1))
    whole = sum(1 for s in slices if s.compute_milli >= 1000 and s.memory_mib >= s.device_memory_mib)
    env = {**(spec.get("env") or {}), "GPUPOOL_JOB_ID": str(job.id),
           "GPUPOOL_ATTEMPT_ID": str(attempt.id), "GPUPOOL_JOB_NAME": job.name}
    argv = list(spec.get("command") or [])
    port_count = int(spec.get("ports") or 0)
    readiness = spec.get("readiness_path")
    try:
        plan = build_launch(spec, rank=member.rank, world_size=nnodes)
    except Exception:  # noqa: BLE001 - a launcher bug must not stop the agent loop
        # The order then carries the spec's own command (empty for packaged kinds), and the
        # agent answers failed_to_start, so the job fails visibly instead of hanging.
        log.exception("launch plan for job %s rank %s failed", job.id, member.rank)
        plan = None
    if plan is not None:
        argv = list(plan.argv)
        env.update(plan.env)
        port_count = plan.port_count
        readiness = plan.readiness_path
    return wire.StartOrder(
        job_id=str(job.id), attempt_id=str(attempt.id), epoch=epoch, rank=member.rank,
        name=job.name, argv=argv, env=env, workdir=spec.get("workdir"), slices=slices,
        cpu_milli=member.cpu_milli, memory_mib=member.memory_mib,
        rendezvous=wire.Rendezvous(master_addr=master_addr, master_port=attempt.master_port,
                                   nnodes=nnodes, node_rank=member.rank,
                                   nproc_per_node=max(1, whole)),
        identity=identity, spec=spec if job.kind != "custom" else None, image=spec.get("image"),
        grace_s=float(spec.get("grace_s", 30.0)), port_count=port_count, readiness_path=readiness)
