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


def announce(rt: Runtime, kind: str) -> None:
    """Each rank says where it runs; rank 0 reports the job's topology as its first progress line."""
    topo = rt.topology
    rt.log(f"{kind}: rank {topo.rank} of world {topo.world_size} (node {topo.node_rank} of {topo.nodes}, "
           f"local rank {topo.local_rank} of {topo.ranks_per_node}) on {rt.device}")
    if rt.is_main:
        progress.emit(event="started", kind=kind)


def to_device(batch: dict[str, Any], device: Any, positions: bool = True) -> dict[str, Any]:
    """Model inputs on ``device``; without position ids for methods that prepend virtual tokens.

    No KV cache: with one, transformers stops reading packed documents from the position ids.
    """
    out = {k: v.to(device) for k, v in batch.items() if positions or k != "position_ids"}
    return {**out, "use_cache": False}


def evaluate_loss(model: Any, rows: Any, batch_size: int, max_batches: int, device: Any, *, rank: int = 0,
                  world: int = 1, positions: bool = True) -> float:
    """Mean loss per target token over up to ``max_batches`` validation batches, shared by the ranks.

    Every rank runs the same number of forward passes (ZeRO-3 gathers parameters collectively).
    """
    import torch
    import torch.distributed as dist

    was_training = model.training
    model.eval()
    starts = list(range(0, min(len(rows), batch_size * max_batches), batch_size))
    mine = starts[rank::world] if len(starts) >= world else starts[:1]
    total = torch.zeros(2, dtype=torch.float64)
    with torch.no_grad():
        for i in mine[: max(len(starts) // world, 1)]:
            batch = rows.batch(list(range(i, min(i + batch_size, len(rows)))))
            targets = float((batch["labels"][:, 1:] != -100).sum())
            if targets:
                loss = float(model(**to_device(batch, device, positions)).loss)
                total += torch.tensor([loss * targets, targets], dtype=torch.float64)
    if world > 1 and dist.is_initialized():
        dist.all_reduce(total)
    if was_training:
        model.train()
    return float(total[0] / total[1]) if total[1] else float("nan")


def train(engine: Any, t: Any, rt: Runtime, train_rows: Any, val_rows: Any, *,
          extra_state: dict[str, Any] | None = None, positions: bool = True) -> dict[str, Any]:
    """Run ``t.steps`` optimizer steps from the latest checkpoint; returns the final figures."""
    stop = StopFlag()
    state = checkpoint.resume(engine, rt.output_dir)
    step = int(state["step"]) if state else 0
    if state:
        rt.log(f"resumed from checkpoint at step {step}")
        if rt.is_main:
            progress.emit(event="resumed", step=step, total=t.steps)
    order = BatchOrder(len(train_rows), t.micro_batch_size, t.seed, rt.rank, rt.world_size)
    meter = progress.Meter(t.steps, start_step=step)
    tokens_per_step = t.micro_batch_size * t.grad_accum * t.seq_len * rt.world_size
    def val_loss() -> float:
        return evaluate_loss(engine.module, val_rows, t.micro_batch_size, t.eval_batches, rt.device,
                             rank=rt.rank, world=rt.world_size, positions=positions)

    first_val = val_loss()
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
            batch = train_rows.batch(order.indices(step * t.grad_accum + micro))
            loss = engine(**to_device(batch, rt.device, positions)).loss
            engine.backward(loss)
            engine.step()
            losses.append(float(loss.detach()))
        step += 1
        meter.add_tokens(tokens_per_step)
        loss_val = sum(losses) / len(losses)
        if rt.is_main and (step % t.log_every == 0 or step == t.steps):
            progress.emit(step=step, total=t.steps, loss=loss_val, lr=engine.get_lr()[0], **meter.figures(step))
        if t.eval_every and step % t.eval_every == 0 and step < t.steps:
            v = val_loss()
            if rt.is_main:
                progress.emit(step=step, total=t.steps, val_loss=v, val_ppl=math.exp(min(v, 50)))
        if step % t.checkpoint_every == 0 or step == t.steps:
            checkpoint.save(engine, rt.output_dir, step, extra_state or {}, t.keep_checkpoints, rt.is_main)
    val = val_loss()
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
