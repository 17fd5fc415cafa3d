"""Spec -> what the agent runs: argv, env, port count and readiness probe of one gang member.

The server calls ``build_launch`` with the job's stored, normalised spec (a dict: nothing is
parsed or validated again) when it creates start orders; the agent adds the slice
(``GPUPOOL_*``), the gang's rendezvous (MASTER_ADDR, MASTER_PORT, ...) and, for packaged
workloads, the spec file (``GPUPOOL_SPEC_FILE``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


def build_launch(spec: dict, *, rank: int = 0, world_size: int = 1) -> LaunchPlan:
    """The launch plan of member ``rank`` of ``world_size`` for the normalised ``spec``."""
    if not 0 <= rank < max(world_size, 1):
        raise ValueError(f"rank {rank} is outside a world of {world_size}")
    kind = spec.get("kind", "custom")
    env = {"PYTHONUNBUFFERED": "1", "GPUPOOL_JOB_KIND": kind, "GPUPOOL_WORLD_MEMBERS": str(world_size),
           # the job's own time to stop (checkpoint) after SIGTERM: its launcher and vLLM's children honour it
           "GPUPOOL_GRACE_S": str(spec.get("grace_s", 30))}
    if spec.get("output"):
        env["GPUPOOL_OUTPUT_DIR"] = spec["output"]  # shared across attempts: checkpoints survive a restart
    env.update(spec.get("env") or {})
    if kind == "custom":
        return LaunchPlan(argv=list(spec["command"]), env=env, port_count=int(spec.get("ports") or 0),
                          readiness_path=spec.get("readiness_path") if rank == 0 else None)
    module = ENTRYPOINTS.get(kind)
    if module is None:
        raise ValueError(f"kind: no entry point for {kind!r}")
    argv = ["python", "-m", module]  # the spec reaches it as the file GPUPOOL_SPEC_FILE names
    if kind == "inference":
        # rank 0 serves the OpenAI API (one port); other ranks join its Ray cluster and serve nothing
        return LaunchPlan(argv=argv, env=env, port_count=1 if rank == 0 else 0,
                          readiness_path="/health" if rank == 0 else None)
    return LaunchPlan(argv=argv, env=env)
