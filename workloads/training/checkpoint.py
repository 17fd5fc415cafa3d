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
    """Load the latest checkpoint when one exists; returns its client state (with ``step``)."""
    root = ckpt_dir(output_dir)
    if not os.path.isfile(os.path.join(root, "latest")):
        return None
    path, state = engine.load_checkpoint(root, load_optimizer_states=True, load_lr_scheduler_states=True)
    if path is None:
        return None
    return dict(state or {})
