"""Spec -> what the agent runs: argv, env, port count and readiness probe of one gang member.

The server calls ``build_launch`` when it creates start orders; the agent adds the slice
(``GPUPOOL_*``) and the gang's rendezvous (MASTER_ADDR, MASTER_PORT, WORLD_SIZE, RANK, ...).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from workloads.specs import CustomSpec, SpecBase

ENTRYPOINTS = {
    "pretrain": "workloads.pretrain",
    "finetune": "workloads.finetune",
    "evaluate": "workloads.evaluate",
    "inference": "workloads.inference",
}


@dataclass
class LaunchPlan:
    """One member's process: ``argv[0] == "python"`` means the agent's own interpreter."""

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    port_count: int = 0
    readiness_path: str | None = None


def build_launch(spec: SpecBase, *, rank: int = 0, world_size: int = 1) -> LaunchPlan:
    """The launch plan of member ``rank`` of ``world_size`` for ``spec``."""
    if not 0 <= rank < max(world_size, 1):
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    env = {"PYTHONUNBUFFERED": "1", "GPUPOOL_JOB_KIND": spec.kind, "GPUPOOL_WORLD_MEMBERS": str(world_size)}
    if spec.output:
        env["GPUPOOL_OUTPUT_DIR"] = spec.output  # shared across attempts: checkpoints survive a restart
    env.update(spec.env)
    if isinstance(spec, CustomSpec):
        return LaunchPlan(argv=list(spec.command), env=env, port_count=spec.ports,
                          readiness_path=spec.readiness_path if rank == 0 else None)
    module = ENTRYPOINTS.get(spec.kind)
    if module is None:
        raise ValueError(f"kind: no entry point for {spec.kind!r}")
    argv = ["python", "-m", module, "--spec-json", spec.model_dump_json()]
    if spec.kind == "inference":
        # rank 0 serves the OpenAI API (one port); other ranks join its Ray cluster and serve nothing
        return LaunchPlan(argv=argv, env=env, port_count=1 if rank == 0 else 0,
                          readiness_path="/health" if rank == 0 else None)
    return LaunchPlan(argv=argv, env=env)
