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

NODE_SCORE_MAX = 100  # the paper simulator's integer node scores run 0..100
BESTFIT_CPU_SCALE = 128_000  # bestfit normalises CPU by the largest node of the trace (128 cores)
BESTFIT_GPU_SCALE = 8 * WHOLE  # ... and GPU by the largest node (8 GPUs)
BESTFIT_CPU_SHARE = 0.5  # CPU and GPU left count equally in the paper's best-fit
FGD_SCALE = 1000.0  # dF (milli) is divided by this before the sigmoid, as in the paper
BINPACK_CPU_TIEBREAK = 1e-3  # CPU left only breaks ties between equal GPU left
BINPACK_CPU_SCALE = 1e6  # CPU milli to a number below one for any real node
TOPOLOGY_SAME_DOMAIN = 2  # a multi-GPU member on one NVLink domain
TOPOLOGY_SAME_NUMA = 1  # ... else on one NUMA node


class NoPreparation:
    """Scorers that need nothing from the context ahead of scoring."""

    def prepare(self, ctx: Context) -> None:
        """Nothing to build."""


def gpu_free_after(ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
    """Free GPU milli left on each candidate node after placing the member."""
    return ctx.state.gpu_free[cands.nodes].sum(axis=1) - shape.gpu_milli_total


class BinPack(NoPreparation):
    """Prefer the node with the least GPU (then CPU) left: keeps whole nodes free."""

    name = "binpack"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        gpu_left = gpu_free_after(ctx, shape, cands) / (WHOLE * max(ctx.state.g, 1))
        cpu_left = (ctx.state.cpu_free[cands.nodes] - shape.cpu_milli) / BINPACK_CPU_SCALE
        return -(gpu_left + BINPACK_CPU_TIEBREAK * cpu_left)


class Spread(BinPack):
    """Prefer the emptiest node: spreads load (for latency-sensitive serving)."""

    name = "spread"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        return -super().score(ctx, shape, cands)


class BestFit(NoPreparation):
    """The FGD paper's best-fit: smallest CPU and GPU left, as an integer 0..100."""

    name = "bestfit"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        state = ctx.state
        cpu_left = state.cpu_free[cands.nodes] - shape.cpu_milli
        gpu_left = gpu_free_after(ctx, shape, cands)
        raw = (1.0 - (BESTFIT_CPU_SHARE * cpu_left / BESTFIT_CPU_SCALE
                      + (1 - BESTFIT_CPU_SHARE) * gpu_left / BESTFIT_GPU_SCALE)) * NODE_SCORE_MAX
        node_score = np.trunc(raw)
        if cands.gpus is not None:  # tightest accelerator inside the node as a sub-tie-break
            tight = state.gpu_free[cands.nodes, cands.gpus] - shape.milli
            node_score = node_score - tight / (WHOLE * 10)  # below one point: never beats a point
        return node_score


def frag_delta(cache: FragCache, shape: MemberShape, cands: Candidates) -> np.ndarray:
    """dF of every spot: the change of its node's fragmentation if the member went there."""
    if cands.gpus is not None:
        return cache.delta_fraction(cands.nodes, cands.gpus, shape.milli, shape.cpu_milli)
    chosen = cands.chosen if cands.chosen is not None else np.zeros((len(cands), cache.state.g), bool)
    return cache.delta_whole(cands.nodes, chosen, shape.whole, shape.cpu_milli)


class FGD:
    """Fragmentation gradient descent: int(sigmoid(-dF / 1000) * 100), as in the paper."""

    name = "fgd"

    def prepare(self, ctx: Context) -> None:
        ctx.fragmentation.flush()  # built now, so the first placement is not the slow one

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        delta = frag_delta(ctx.fragmentation, shape, cands)
        return np.trunc(NODE_SCORE_MAX / (1.0 + np.exp(delta / FGD_SCALE)))


class Topology(NoPreparation):
    """Multi-GPU members prefer one NVLink domain, then one NUMA node."""

    name = "topology"

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray | float:
        state = ctx.state
        if not (shape.whole > 1 and state.has_topology):
            return 0.0  # nothing to prefer: every spot alike
        out = np.zeros(len(cands))
        if cands.chosen is not None and shape.whole > 1 and state.has_topology:
            for c, node in enumerate(cands.nodes):
                picked = np.flatnonzero(cands.chosen[c])
                domains = set(state.gpu_domain[node, picked].tolist())
                numas = set(state.gpu_numa[node, picked].tolist())
                if len(domains) == 1 and -1 not in domains:
                    out[c] += TOPOLOGY_SAME_DOMAIN
                elif len(numas) == 1 and -1 not in numas:
                    out[c] += TOPOLOGY_SAME_NUMA
        return out
