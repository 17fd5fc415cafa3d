"""Fit filter: where one member fits (CPU, memory, accelerator share, constraints, reservations).

The one definition of "fits", used by placement, preemption and the pending reasons alike.
Fractions go on one accelerator with enough free milli and memory; whole requests take
accelerators nobody uses. Cordoned, not-ready nodes and unhealthy accelerators never fit, and
a node held for a blocked queue head only takes members that end before the head starts.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.framework import Candidates, Context, MemberShape
from controlplane.scheduler.state import ClusterState

Rows = slice | np.ndarray


def host_room(state: ClusterState, shape: MemberShape, rows: Rows = slice(None)) -> np.ndarray:
    """(N,) usable nodes with the member's CPU and memory free."""
    return (state.usable(shape.ends_at, rows) & (state.cpu_free[rows] >= shape.cpu_milli)
            & (state.mem_free[rows] >= shape.memory_mib))


def gpu_room(ctx: Context, shape: MemberShape, rows: Rows = slice(None)) -> np.ndarray:
    """(N, G) accelerators the member may take: idle allowed ones (whole), or allowed ones with
    its milli and memory free (fraction)."""
    state = ctx.state
    memory = shape.gpu_memory_mib or ctx.fraction_memory(shape.milli)[rows]
    room = (state.idle[rows] if shape.whole else
            (state.gpu_free[rows] >= shape.milli) & (state.gpu_mem_free[rows] >= memory))
    if shape.constraints.any_accelerator:  # every healthy one is allowed, and room implies healthy
        return room
    return room & ctx.allowed(shape.constraints)[rows]


def gpus_fit(shape: MemberShape, room: np.ndarray) -> np.ndarray:
    """(N,) nodes whose accelerator room (from ``gpu_room``) holds the member."""
    return room.sum(axis=1) >= shape.whole if shape.whole else room.any(axis=1)


def fits_on(ctx: Context, shape: MemberShape, node: int) -> bool:
    """Whether the member fits on ``node`` now (a gang's members each on a node of their own)."""
    if node in ctx.gang:
        return False
    rows = np.array([node])
    if not host_room(ctx.state, shape, rows)[0]:
        return False
    return not shape.uses_gpu or bool(gpus_fit(shape, gpu_room(ctx, shape, rows))[0])


def candidates(ctx: Context, shape: MemberShape) -> Candidates:
    """All feasible spots of one member (possibly none); nodes its gang already uses are not: a
    member is a node's share of the job (several GPUs on one node are one member)."""
    state = ctx.state
    fits = host_room(state, shape)
    if ctx.gang:
        fits[list(ctx.gang)] = False
    if shape.whole:
        if shape.constraints.any_accelerator:  # idle counts are kept per node: no (N, G) pass
            nodes = np.flatnonzero(fits & (state.idle_count >= shape.whole))
            sub = state.idle[nodes]
        else:
            idle = gpu_room(ctx, shape) & fits[:, None]
            nodes = np.flatnonzero(idle.sum(axis=1) >= shape.whole)
            sub = idle[nodes]
        chosen = sub & (np.cumsum(sub, axis=1) <= shape.whole)
        if shape.whole > 1 and state.has_topology:
            group_aware(state, nodes, sub, chosen, shape.whole)
        return Candidates(nodes, chosen=chosen)
    if shape.milli:
        room = gpu_room(ctx, shape) & fits[:, None]
        if not (shape.constraints.vendor or shape.constraints.labels):
            room &= state.distinct  # alike accelerators of a node score alike: try the first
        nodes, gpus = np.nonzero(room)
        return Candidates(nodes, gpus=gpus)
    return Candidates(np.flatnonzero(fits))


def group_aware(state: ClusterState, nodes: np.ndarray, idle: np.ndarray, chosen: np.ndarray,
                k: int) -> None:
    """Re-pick ``k`` idle GPUs inside one NVLink domain (else one NUMA node), tightest first."""
    has_topology = (state.gpu_domain[nodes] >= 0) | (state.gpu_numa[nodes] >= 0)
    for c in np.flatnonzero(has_topology.any(axis=1)):
        n = nodes[c]
        for groups in (state.gpu_domain[n], state.gpu_numa[n]):
            options = []
            for gid in set(groups[idle[c]].tolist()) - {-1}:
                members = np.flatnonzero(idle[c] & (groups == gid))
                if len(members) >= k:
                    options.append((len(members), gid, members[:k]))
            if options:
                chosen[c] = False
                chosen[c, min(options, key=lambda o: (o[0], o[1]))[2]] = True
                break


def grants_of(state: ClusterState, shape: MemberShape, cands: Candidates,
              pick: int) -> tuple[int, tuple[tuple[int, int, int], ...]]:
    """(node, ((gpu, milli, MiB), ...)) of the picked spot."""
    node = int(cands.nodes[pick])
    if cands.chosen is not None:
        gpus = np.flatnonzero(cands.chosen[pick])
        return node, tuple((int(j), WHOLE, int(state.acc_mem_cap[node, j])) for j in gpus)
    if cands.gpus is not None:
        j = int(cands.gpus[pick])
        mem = shape.gpu_memory_mib or int(state.acc_mem_cap[node, j]) * shape.milli // WHOLE
        return node, ((j, shape.milli, mem),)
    return node, ()
