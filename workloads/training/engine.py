"""DeepSpeed engine of a training run: config from the spec, own AdamW, warmup + cosine schedule."""

from __future__ import annotations

import math
import os
from typing import Any

from workloads.training.runtime import Runtime


def ds_config(t: Any, precision: str) -> dict[str, Any]:
    """The DeepSpeed config of TrainingSpec ``t`` (ZeRO 0-3, precision, accumulation, clipping)."""
    zero: dict[str, Any] = {"stage": t.zero_stage}
    if t.offload_optimizer and t.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
    if t.zero_stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = True
    cfg: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": t.micro_batch_size,
        "gradient_accumulation_steps": t.grad_accum,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "gradient_clipping": t.max_grad_norm,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
        "bf16": {"enabled": precision == "bf16"},
        "fp16": {"enabled": precision == "fp16", "initial_scale_power": 12},
    }
    return cfg


def lr_lambda(warmup: int, total: int) -> Any:
    def f(step: int) -> float:
        if warmup and step < warmup:
            return (step + 1) / warmup
        progress = min(max(step - warmup, 0) / max(total - warmup, 1), 1.0)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def init_distributed(rt: Runtime) -> None:
    import deepspeed

    if rt.device.type == "cpu" and os.environ.get("GPUPOOL_DS_SHM_COMM") != "1":
        # Plain gloo on CPU: DeepSpeed's optional shared-memory comm op is JIT-compiled (~45 s) under a
        # file lock in ~/.cache/torch_extensions that every job on the node shares, and a job killed
        # while building leaves the lock behind, hanging all later jobs. GPUPOOL_DS_SHM_COMM=1 keeps it.
        import importlib

        # (sys.modules lookup: the attribute deepspeed.comm.torch is PyTorch itself, re-exported)
        importlib.import_module("deepspeed.comm.torch").build_shm_op = lambda: None
    backend = "nccl" if rt.device.type == "cuda" else "gloo"
    deepspeed.init_distributed(dist_backend=backend, auto_mpi_discovery=False, verbose=False)


def build_engine(model: Any, t: Any, rt: Runtime) -> Any:
    """Wrap ``model`` in a DeepSpeed engine that trains only its parameters with requires_grad."""
    import deepspeed
    import torch

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if rt.device.type == "cuda" else "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    opt = torch.optim.AdamW([g for g in groups if g["params"]], lr=t.lr, betas=(0.9, 0.95), eps=1e-8)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_lambda(t.warmup_steps, t.steps))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched,
                                           config=ds_config(t, rt.precision))
    return engine
