"""Start orders: argv/env from the job spec (workloads.launch when present, else custom only)."""

from __future__ import annotations

from controlplane.core import wire
from controlplane.db.models import AttemptRow, JobRow, MemberRow
from workloads.specs import parse_job_spec

try:  # the workloads engineer's launcher; optional until it lands
    from workloads.launch import build_launch  # type: ignore[attr-defined]
except ImportError:  # pragma: no cover - depends on the tree's state
    build_launch = None


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
    if build_launch is not None:
        try:
            plan = build_launch(spec, rank=member.rank, world_size=world)
        except Exception:  # noqa: BLE001 - a launcher bug must not stop the agent loop
            plan = None
        if plan is not None:
            argv = list(plan.argv)
            env.update(plan.env)
            port_count = int(getattr(plan, "port_count", port_count) or 0)
            readiness = getattr(plan, "readiness_path", readiness)
    return wire.StartOrder(
        job_id=str(job.id), attempt_id=str(attempt.id), epoch=epoch, rank=member.rank,
        name=job.name, argv=argv, env=env, workdir=spec.workdir, slices=slices,
        rendezvous=wire.Rendezvous(master_addr=master_addr, master_port=attempt.master_port,
                                   world_size=world, rank=member.rank, node_rank=member.rank),
        grace_s=spec.grace_s, port_count=port_count, readiness_path=readiness)
