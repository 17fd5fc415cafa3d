"""The training loop both pre-train and fine-tune use: steps, eval, progress, checkpoints, SIGTERM."""

from __future__ import annotations

import math
import signal
import time
from typing import Any

from workloads import progress
from workloads.data.blocks import BatchOrder
from workloads.training import checkpoint
from workloads.training.runtime import Runtime

PREEMPTED_EXIT = 143  # 128 + SIGTERM: saved and stopped on request, not finished


class StopFlag:
    """Set by SIGTERM/SIGINT; ranks agree on it each step so all save the same checkpoint."""

    def __init__(self) -> None:
        self.set = False
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._on)

    def _on(self, signum: int, frame: Any) -> None:
        self.set = True

    def agreed(self, rt: Runtime) -> bool:
        import torch
        import torch.distributed as dist

        if rt.world_size == 1 or not dist.is_initialized():
            return self.set
        t = torch.tensor([1.0 if self.set else 0.0], device=rt.device if rt.device.type == "cuda" else "cpu")
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())


def evaluate_loss(model: Any, blocks: Any, batch_size: int, max_batches: int, device: Any) -> float:
    """Mean token loss over up to ``max_batches`` validation batches."""
    import torch

    was_training = model.training
    model.eval()
    total, n = 0.0, 0
    with torch.no_grad():
        for i in range(0, min(len(blocks), batch_size * max_batches), batch_size):
            x = blocks[i:i + batch_size].to(device)
            total += float(model(input_ids=x, labels=x).loss)
            n += 1
    if was_training:
        model.train()
    return total / max(n, 1)


def train(engine: Any, t: Any, rt: Runtime, train_blocks: Any, val_blocks: Any, *,
          extra_state: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run ``t.steps`` optimizer steps from the latest checkpoint; returns the final figures."""
    stop = StopFlag()
    state = checkpoint.resume(engine, rt.output_dir)
    step = int(state["step"]) if state else 0
    if state:
        rt.log(f"resumed from checkpoint at step {step}")
        if rt.is_main:
            progress.emit(event="resumed", step=step, total=t.steps)
    order = BatchOrder(len(train_blocks), t.micro_batch_size, t.seed, rt.rank, rt.world_size)
    meter = progress.Meter(t.steps, start_step=step)
    tokens_per_step = t.micro_batch_size * t.grad_accum * t.seq_len * rt.world_size
    first_val = evaluate_loss(engine.module, val_blocks, t.micro_batch_size, t.eval_batches, rt.device)
    if rt.is_main:
        progress.emit(step=step, total=t.steps, val_loss=first_val, val_ppl=math.exp(min(first_val, 50)))
    loss_val = float("nan")
    engine.train()
    while step < t.steps:
        if stop.agreed(rt):
            checkpoint.save(engine, rt.output_dir, step, extra_state or {}, t.keep_checkpoints, rt.is_main)
            if rt.is_main:
                progress.emit(event="preempted", step=step, total=t.steps, checkpoint=f"step{step}")
            rt.log(f"stopped by signal at step {step}; checkpoint saved")
            return {"step": step, "stopped": True, "exit_code": PREEMPTED_EXIT}
        losses = []
        for micro in range(t.grad_accum):
            idx = order.indices(step * t.grad_accum + micro)
            x = train_blocks[idx].to(rt.device)
            loss = engine(input_ids=x, labels=x).loss
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
        step += 1
        meter.add_tokens(tokens_per_step)
        loss_val = sum(losses) / len(losses)
        if rt.is_main and (step % t.log_every == 0 or step == t.steps):
            progress.emit(step=step, total=t.steps, loss=loss_val, lr=engine.get_lr()[0], **meter.figures(step))
        if t.eval_every and step % t.eval_every == 0 and step < t.steps:
            v = evaluate_loss(engine.module, val_blocks, t.micro_batch_size, t.eval_batches, rt.device)
            if rt.is_main:
                progress.emit(step=step, total=t.steps, val_loss=v, val_ppl=math.exp(min(v, 50)))
        if step % t.checkpoint_every == 0 or step == t.steps:
            checkpoint.save(engine, rt.output_dir, step, extra_state or {}, t.keep_checkpoints, rt.is_main)
    val = evaluate_loss(engine.module, val_blocks, t.micro_batch_size, t.eval_batches, rt.device)
    figs = meter.figures(step)
    peak = peak_gpu_mib(rt)
    if rt.is_main:
        progress.emit(step=step, total=t.steps, loss=loss_val, val_loss=val, val_ppl=math.exp(min(val, 50)),
                      first_val_loss=first_val, tokens_per_s=figs["tokens_per_s"], eta_s=0.0, done=True,
                      peak_gpu_mib=peak)
    return {"step": step, "stopped": False, "exit_code": 0, "val_loss": val, "first_val_loss": first_val,
            "train_loss": loss_val, "tokens_per_s": figs["tokens_per_s"], "time_s": time.time(),
            "peak_gpu_mib": peak}


def peak_gpu_mib(rt: Runtime) -> float | None:
    """Peak memory torch reserved on this process's GPU (None on CPU)."""
    if rt.device.type != "cuda":
        return None
    import torch

    return round(torch.cuda.max_memory_reserved(rt.device) / 2**20, 1)
