"""Score plugins: binpack, spread, best-fit (paper formula), FGD and topology.

Each returns one number per candidate spot; higher is better. bestfit and fgd round to the
integer node scores of the FGD paper's simulator, because its tie-break (lowest node rank
among equal integer scores) is part of what its published figures measure.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.frag import FragCache
from controlplane.scheduler.framework import Candidates, Context, MemberShape


def gpu_free_after(ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
    """Free GPU milli left on each candidate node after placing the member."""
    return ctx.state.gpu_free[cands.nodes].sum(axis=1) - shape.gpu_milli_total


class BinPack:
    """Prefer the node with the least GPU (then CPU) left: keeps whole nodes free."""

    name = "binpack"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        gpu_left = gpu_free_after(ctx, shape, cands) / (WHOLE * max(ctx.state.g, 1))
        cpu_left = (ctx.state.cpu_free[cands.nodes] - shape.cpu_milli) / 1e6
        return -(gpu_left + 1e-3 * cpu_left)


class Spread:
    """Prefer the emptiest node: spreads load (for latency-sensitive serving)."""

    name = "spread"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        return -BinPack().score(ctx, shape, cands)


class BestFit:
    """The FGD paper's best-fit: smallest CPU and GPU left, as an integer 0..100."""

    name = "bestfit"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        state = ctx.state
        cpu_left = state.cpu_free[cands.nodes] - shape.cpu_milli
        gpu_left = gpu_free_after(ctx, shape, cands)
        raw = (1.0 - (0.5 * cpu_left / 128000 + 0.5 * gpu_left / 8000)) * 100
        node_score = np.trunc(raw)
        if cands.gpus is not None:  # tightest accelerator inside the node as a sub-tie-break
            tight = state.gpu_free[cands.nodes, cands.gpus] - shape.milli
            node_score = node_score - tight / (WHOLE * 10)
        return node_score


def frag_cache(ctx: Context, key: str = "fgd") -> FragCache:
    cache = ctx.caches.get(key)
    if cache is None:
        raise LookupError(f"policy needs a target workload for fragmentation ('{key}')")
    return cache


def frag_delta(cache: FragCache, shape: MemberShape, cands: Candidates) -> np.ndarray:
    if cands.gpus is not None:
        return cache.delta_fraction(cands.nodes, cands.gpus, shape.milli, shape.cpu_milli,
                                    shape.memory_mib)
    if cands.chosen is not None:
        return cache.delta_whole(cands.nodes, cands.chosen, shape.cpu_milli, shape.memory_mib)
    return cache.delta_whole(cands.nodes, np.zeros((len(cands), cache.state.g), bool),
                             shape.cpu_milli, shape.memory_mib)


class FGD:
    """Fragmentation gradient descent: int(sigmoid(-dF / 1000) * 100), as in the paper."""

    name = "fgd"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        delta = frag_delta(frag_cache(ctx), shape, cands)
        return np.trunc(100.0 / (1.0 + np.exp(delta / 1000.0)))


class Topology:
    """Multi-GPU members prefer one NVLink domain, then one NUMA node; gangs prefer few nodes."""

    name = "topology"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        out = np.zeros(len(cands))
        state = ctx.state
        if cands.chosen is not None and shape.whole > 1:
            for c, node in enumerate(cands.nodes):
                picked = np.flatnonzero(cands.chosen[c])
                domains = set(state.gpu_domain[node, picked].tolist())
                numas = set(state.gpu_numa[node, picked].tolist())
                if len(domains) == 1 and -1 not in domains:
                    out[c] += 2
                elif len(numas) == 1 and -1 not in numas:
                    out[c] += 1
        if ctx.gang_nodes:
            out += 3 * np.isin(cands.nodes, list(ctx.gang_nodes))
        return out
