"""DeepSpeed engine of a training run: config from the spec, own AdamW, warmup + cosine schedule."""

from __future__ import annotations

import math
import os
from typing import Any

from workloads.estimate import DS_PREFETCH_BUCKET, DS_REDUCE_BUCKET
from workloads.training.runtime import Runtime


ADAM_BETAS = (0.9, 0.95)


def ds_config(t: Any, precision: str, trainable: int = DS_REDUCE_BUCKET) -> dict[str, Any]:
    """The DeepSpeed config of TrainingSpec ``t`` (ZeRO 0-3, precision, accumulation, clipping).

    Buckets are DeepSpeed's defaults capped at the trainable size (what the estimator charges);
    with ``offload_optimizer`` the optimizer is DeepSpeed's own AdamW (CPU Adam on the host).
    """
    zero: dict[str, Any] = {"stage": t.zero_stage}
    bucket = int(min(DS_REDUCE_BUCKET, max(trainable, 1)))
    if t.zero_stage in (1, 2):
        zero.update(reduce_bucket_size=bucket, allgather_bucket_size=bucket)
    if t.zero_stage == 3:
        zero.update(reduce_bucket_size=bucket, stage3_prefetch_bucket_size=int(min(DS_PREFETCH_BUCKET, bucket)),
                    stage3_gather_16bit_weights_on_model_save=True)
    if t.offload_optimizer and t.zero_stage > 0:
        zero["offload_optimizer"] = {"device": "cpu", "pin_memory": False}
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
    if t.offload_optimizer and t.zero_stage > 0:
        cfg["optimizer"] = {"type": "AdamW", "params": {"lr": t.lr, "betas": list(ADAM_BETAS), "eps": 1e-8,
                                                         "weight_decay": t.weight_decay}}
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
    """Wrap ``model`` in a DeepSpeed engine that trains only its parameters with requires_grad.

    The optimizer is torch's AdamW, or DeepSpeed's (CPU Adam) when the optimizer is offloaded:
    DeepSpeed 0.19 refuses a client optimizer with ZeRO-Offload.
    """
    import deepspeed
    import torch

    os.environ.setdefault("DS_ACCELERATOR", "cuda" if rt.device.type == "cuda" else "cpu")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    groups = [g for g in ({"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    config = ds_config(t, rt.precision, sum(p.numel() for p in params))
    schedule = lr_lambda(t.warmup_steps, t.steps)
    if "optimizer" in config:
        engine, _, _, _ = deepspeed.initialize(
            model=model, model_parameters=groups, config=config,
            lr_scheduler=lambda opt: torch.optim.lr_scheduler.LambdaLR(opt, schedule))
    else:
        opt = torch.optim.AdamW(groups, lr=t.lr, betas=ADAM_BETAS, eps=1e-8)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, schedule)
        engine, _, _, _ = deepspeed.initialize(model=model, optimizer=opt, lr_scheduler=sched, config=config)
    rt.log(f"DeepSpeed ZeRO-{t.zero_stage}, optimizer {type(engine.basic_optimizer).__name__}"
           f"{' (offloaded to the CPU)' if 'optimizer' in config else ''}")
    return engine
