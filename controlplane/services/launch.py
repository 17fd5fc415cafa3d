"""Start orders: argv, env, ports and readiness from the job spec through workloads.launch."""

from __future__ import annotations

import logging

from controlplane.core import wire
from controlplane.db.models import AttemptRow, JobRow, MemberRow
from workloads.launch import build_launch
from workloads.specs import parse_job_spec

log = logging.getLogger(__name__)


def build_start(job: JobRow, attempt: AttemptRow, member: MemberRow, slices: list[wire.SliceSpec],
                epoch: int, master_addr: str) -> wire.StartOrder:
    spec = parse_job_spec(job.spec)
    world = int(job.request.get("nodes", 1))
    env = {**spec.env, "GPUPOOL_JOB_ID": str(job.id), "GPUPOOL_ATTEMPT_ID": str(attempt.id),
           "GPUPOOL_JOB_NAME": job.name, "GPUPOOL_RANK": str(member.rank),
           "GPUPOOL_WORLD_SIZE": str(world), "MASTER_ADDR": master_addr,
           "MASTER_PORT": str(attempt.master_port)}
    argv = list(getattr(spec, "command", []) or [])
    port_count = int(getattr(spec, "ports", 0) or 0)
    readiness = getattr(spec, "readiness_path", None)
    try:
        plan = build_launch(spec, rank=member.rank, world_size=world)
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
        name=job.name, argv=argv, env=env, workdir=spec.workdir, slices=slices,
        rendezvous=wire.Rendezvous(master_addr=master_addr, master_port=attempt.master_port,
                                   world_size=world, rank=member.rank, node_rank=member.rank),
        grace_s=spec.grace_s, port_count=port_count, readiness_path=readiness)
