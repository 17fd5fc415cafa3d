"""Pending reasons a person can act on: what is short, by how much, and where it is closest.

Called only for jobs that did not fit, so it may look at the whole state with numpy. Where a
member fits is the fit filter's answer (``host_room``/``gpu_room``), never a copy of it.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.core.snapshot import PendingReason
from controlplane.core.states import PendingCode
from controlplane.scheduler.framework import Context, MemberShape
from controlplane.scheduler.plugins.fit import gpu_room, gpus_fit, host_room
from controlplane.scheduler.queues import gpus

NO_BOUND = 10**6  # members per node when neither CPU, memory nor GPU bounds them


def _want(shape: MemberShape, models: list[str]) -> str:
    kind = "/".join(models) if models else "GPU"
    if shape.whole:
        return f"{shape.whole} free {kind}" + ("" if shape.whole == 1 else "s")
    mem = f" and {shape.gpu_memory_mib} MiB" if shape.gpu_memory_mib else ""
    return f"{gpus(shape.milli)} of a {kind} ({shape.milli} milli{mem})"


def _gang_prefix(gang: int, placed: int) -> str:
    return f"gang of {gang} needs {gang} member spots, {placed} fit; " if gang > 1 else ""


def constraint_reason(ctx: Context, shape: MemberShape, gang: int = 1) -> PendingReason | None:
    """'Can never fit' reasons: no matching accelerator, no node large enough, or a gang
    larger than the whole pool could hold even when empty."""
    state = ctx.state
    c = shape.constraints
    if shape.uses_gpu:
        allowed = ctx.allowed(c)
        if not allowed.any():
            have = ", ".join(f"{m} x {int((state.gpu_model[state.gpu_valid] == i).sum())}"
                             for i, m in enumerate(state.models)) or "no accelerators"
            want = []
            if c.models:
                want.append(f"models {'|'.join(c.models)}")
            if c.vendor:
                want.append(f"vendor {c.vendor}")
            if c.min_memory_mib:
                want.append(f"at least {c.min_memory_mib} MiB")
            if c.labels:
                want.append("labels " + ", ".join(f"{k}={v}" for k, v in c.labels))
            return PendingReason(PendingCode.CONSTRAINTS,
                                 f"no accelerator matches {' and '.join(want) or 'the request'} "
                                 f"(pool has: {have})", {"pool": have}, unschedulable=True)
        per_node = allowed.sum(axis=1)
        big = (per_node >= max(shape.whole, 1)) & (state.cpu_cap >= shape.cpu_milli) & (
            state.mem_cap >= shape.memory_mib)
        if shape.milli and shape.gpu_memory_mib:
            big &= (allowed & (state.acc_mem_cap >= shape.gpu_memory_mib)).any(axis=1)
        if not big.any():
            return PendingReason(
                PendingCode.CAPACITY, f"no node can ever hold one member: it needs "
                f"{_want(shape, [])}, {shape.cpu_milli} CPU milli and {shape.memory_mib} MiB; the "
                f"largest node has {int(per_node.max())} matching GPUs and "
                f"{int(state.cpu_cap.max())} CPU milli",
                {"max_gpus_per_node": int(per_node.max())}, unschedulable=True)
    elif not ((state.cpu_cap >= shape.cpu_milli) & (state.mem_cap >= shape.memory_mib)).any():
        return PendingReason(PendingCode.CAPACITY, f"no node has {shape.cpu_milli} CPU milli and "
                             f"{shape.memory_mib} MiB in total", {}, unschedulable=True)
    if gang > 1:
        spots = _spots_when_empty(ctx, shape)
        if spots < gang:
            return PendingReason(PendingCode.GANG, f"gang of {gang} needs {gang} member spots; "
                                 f"even empty, the pool has room for {spots}", {"gang_fit": spots},
                                 unschedulable=True)
    return None


def _spots_when_empty(ctx: Context, shape: MemberShape) -> int:
    """How many members the whole pool could hold if nothing else ran."""
    state = ctx.state
    by_cpu = state.cpu_cap // shape.cpu_milli if shape.cpu_milli else np.full(state.n, NO_BOUND)
    by_mem = state.mem_cap // shape.memory_mib if shape.memory_mib else np.full(state.n, NO_BOUND)
    per_node = np.minimum(by_cpu, by_mem)
    if shape.uses_gpu:
        allowed = ctx.allowed(shape.constraints).sum(axis=1)
        by_gpu = allowed // shape.whole if shape.whole else allowed * (WHOLE // max(shape.milli, 1))
        per_node = np.minimum(per_node, by_gpu)
    return int(np.minimum(per_node, NO_BOUND).sum())


def capacity_reason(ctx: Context, shape: MemberShape, gang: int, placed: int) -> PendingReason:
    """Why no (or not enough) spot is free now; names the closest node."""
    state = ctx.state
    if not state.node_ok.any():
        return PendingReason(PendingCode.CORDONED, "every node is cordoned or not ready", {})
    code = PendingCode.GANG if gang > 1 else PendingCode.CAPACITY
    usable = state.usable(shape.ends_at)
    host_ok = host_room(state, shape)
    details: dict = {"nodes_with_cpu_and_memory": int(host_ok.sum())}
    if gang > 1:
        details["gang_fit"] = placed
    if not shape.uses_gpu:
        best = int(np.argmax(np.where(usable, state.cpu_free, -1)))
        return PendingReason(code, _gang_prefix(gang, placed) + (
            f"no node has {shape.cpu_milli} CPU milli and {shape.memory_mib} MiB free; "
            f"{state.names[best]} has {int(state.cpu_free[best])} CPU milli"), details)
    allowed = ctx.allowed(shape.constraints)
    models = ctx.allowed_models(shape.constraints)
    gpu_ok = gpus_fit(shape, gpu_room(ctx, shape)) & usable
    free = np.where(allowed, state.gpu_free, 0).sum(axis=1) * usable
    best = int(np.argmax(free))
    details |= {"nodes_with_gpus": int(gpu_ok.sum()), "largest_free_milli": int(free[best]),
                "largest_free_node": state.names[best]}
    if gpu_ok.any() and not (gpu_ok & host_ok).any():
        cpu_best = int(np.argmax(np.where(gpu_ok, state.cpu_free, -1)))
        msg = (f"{int(gpu_ok.sum())} node(s) have {_want(shape, models)} but not "
               f"{shape.cpu_milli} CPU milli and {shape.memory_mib} MiB; {state.names[cpu_best]} "
               f"has {int(state.cpu_free[cpu_best])} CPU milli and "
               f"{int(state.mem_free[cpu_best])} MiB free")
    else:
        topo = " on one NVLink domain" if shape.whole > 1 and (state.gpu_domain >= 0).any() else ""
        block = (f"the largest free block is {gpus(int(free[best]))} GPU on {state.names[best]}"
                 if free[best] > 0 else "no matching GPU has anything free")
        msg = f"no node has {_want(shape, models)}{topo}; {block}"
    msg += _held_note(ctx, shape, details)
    return PendingReason(code, _gang_prefix(gang, placed) + msg, details)


def _held_note(ctx: Context, shape: MemberShape, details: dict) -> str:
    """What reservations keep from the member: nodes with room held for a waiting job."""
    state = ctx.state
    if not state.reserved.any():
        return ""
    anytime = replace(shape, ends_at=-math.inf)  # as if no reservation applied to it
    room = host_room(state, anytime) & state.reserved & ~state.usable(shape.ends_at)
    if shape.uses_gpu:
        room &= gpus_fit(shape, gpu_room(ctx, shape))
    if not room.any():
        return f"; {int(state.reserved.sum())} node(s) are held for a waiting job"
    until = float(state.free_until[room].max())
    details["held_nodes_with_room"] = int(room.sum())
    if until == -math.inf:
        return (f"; {int(room.sum())} node(s) with room for it are held for a waiting job whose "
                "start is not known")
    mine = ("it declares no run-time limit" if shape.ends_at == math.inf
            else f"it would end at {shape.ends_at:.0f}")
    return (f"; {int(room.sum())} node(s) with room for it are held for a waiting job that is "
            f"expected to start at {until:.0f}, and {mine}")
