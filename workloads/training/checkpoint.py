"""Periodic DeepSpeed checkpoints with resume: the step count continues after a restart."""

from __future__ import annotations

import os
import shutil
from typing import Any

TAG_PREFIX = "step"


def ckpt_dir(output_dir: str) -> str:
    return os.path.join(output_dir, "checkpoints")


def save(engine: Any, output_dir: str, step: int, state: dict[str, Any], keep: int, is_main: bool) -> str:
    """Save on every rank (DeepSpeed shards), then prune old tags on rank 0."""
    import torch.distributed as dist

    root = ckpt_dir(output_dir)
    tag = f"{TAG_PREFIX}{step}"
    engine.save_checkpoint(root, tag=tag, client_state={**state, "step": step})
    if dist.is_initialized():
        dist.barrier()
    if is_main:
        tags = sorted((d for d in os.listdir(root) if d.startswith(TAG_PREFIX) and d[len(TAG_PREFIX):].isdigit()),
                      key=lambda d: int(d[len(TAG_PREFIX):]))
        for old in tags[:-keep]:
            shutil.rmtree(os.path.join(root, old), ignore_errors=True)
    return tag


def resume(engine: Any, output_dir: str) -> dict[str, Any] | None:
    """Load rank 0's latest checkpoint on every rank; returns its client state (with ``step``).

    All ranks load the tag rank 0 sees; a rank that cannot see it (output not on shared storage)
    fails with a clear error instead of training from a different state.
    """
    import torch.distributed as dist

    from workloads.training.runtime import WorkloadError

    root = ckpt_dir(output_dir)
    latest = os.path.join(root, "latest")
    tag = open(latest, encoding="utf-8").read().strip() if os.path.isfile(latest) else None
    if dist.is_initialized() and dist.get_world_size() > 1:
        box = [tag]
        dist.broadcast_object_list(box, src=0)
        tag = box[0]
    if not tag:
        return None
    if not os.path.isdir(os.path.join(root, tag)):
        raise WorkloadError(f"checkpoint {tag} of rank 0 is not under {root} on this node; "
                            "put the job's output on storage every rank can reach")
    path, state = engine.load_checkpoint(root, tag=tag, load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        raise WorkloadError(f"checkpoint {tag} under {root} could not be loaded")
    return dict(state or {})
