"""Fit filter: every spot where one member fits (CPU, memory, accelerator share, constraints).

Fractions go on one accelerator with enough free milli and memory; whole requests take
accelerators nobody uses. Cordoned, not-ready nodes and unhealthy accelerators never fit.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE, Constraints
from controlplane.scheduler.framework import Candidates, Context, MemberShape
from controlplane.scheduler.state import ClusterState


def allowed_mask(ctx: Context, constraints: Constraints) -> np.ndarray:
    """(N, G) accelerators that satisfy ``constraints`` (cached per cycle)."""
    key = ("allowed", constraints)
    mask = ctx.caches.get(key)
    if mask is None:
        mask = compute_allowed(ctx.state, constraints)
        ctx.caches[key] = mask
    return mask


def compute_allowed(state: ClusterState, c: Constraints) -> np.ndarray:
    mask = state.gpu_valid.copy()
    if c.models:
        ids = [i for i, m in enumerate(state.models) if m in c.models]
        mask &= np.isin(state.gpu_model, ids)
    if c.min_memory_mib:
        mask &= state.acc_mem_cap >= c.min_memory_mib
    if c.vendor or c.labels:
        for i in range(state.n):
            for j in range(len(state.vendors[i])):
                if not mask[i, j]:
                    continue
                if c.vendor and state.vendors[i][j] != c.vendor:
                    mask[i, j] = False
                    continue
                acc_labels = state.acc_labels[i][j] if state.acc_labels[i] else {}
                for key, value in c.labels:
                    if acc_labels.get(key) != value and state.node_labels[i].get(key) != value:
                        mask[i, j] = False
                        break
    return mask


def idle_mask(state: ClusterState) -> np.ndarray:
    """(N, G) accelerators with nothing on them (all compute and all memory free)."""
    return state.gpu_valid & (state.gpu_free == WHOLE) & (state.gpu_mem_free == state.acc_mem_cap)


def node_fits(state: ClusterState, shape: MemberShape) -> np.ndarray:
    return (state.node_ok & ~state.reserved & (state.cpu_free >= shape.cpu_milli)
            & (state.mem_free >= shape.memory_mib))


def fraction_memory(state: ClusterState, shape: MemberShape) -> np.ndarray:
    """(N, G) memory a fraction takes on each accelerator."""
    if shape.gpu_memory_mib:
        return np.full(state.gpu_free.shape, shape.gpu_memory_mib, np.int64)
    return state.acc_mem_cap * shape.milli // WHOLE


def candidates(ctx: Context, shape: MemberShape) -> Candidates:
    """All feasible spots of one member (possibly none)."""
    state = ctx.state
    fits = node_fits(state, shape)
    if shape.whole:
        idle = idle_mask(state) & allowed_mask(ctx, shape.constraints) & fits[:, None]
        nodes = np.flatnonzero(idle.sum(axis=1) >= shape.whole)
        sub = idle[nodes]
        chosen = sub & (np.cumsum(sub, axis=1) <= shape.whole)
        if shape.whole > 1:
            group_aware(state, nodes, sub, chosen, shape.whole)
        return Candidates(nodes, chosen=chosen)
    if shape.milli:
        ok = (allowed_mask(ctx, shape.constraints) & fits[:, None]
              & (state.gpu_free >= shape.milli)
              & (state.gpu_mem_free >= fraction_memory(state, shape)))
        nodes, gpus = np.nonzero(ok)
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
