"""Plugin framework: a member shape, its candidate spots, weighted scorers and an undoable Plan.

Shaped like the Kubernetes scheduler framework, but vectorised: the fit filter yields every
feasible (node, accelerators) spot of one member at once, each score plugin returns one number
per spot, and the Profile picks the best weighted sum (ties: lowest node rank). A Plan records
every take/give so a gang or a preemption is assumed, then committed or rolled back as a whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

import numpy as np

from controlplane.core.resources import WHOLE, Constraints, Request
from controlplane.scheduler.state import ClaimUndo, ClusterState, Claim


class Code(StrEnum):
    """Outcome of trying to place: it fits, not now, never in this pool, or bad input."""

    SUCCESS = "success"
    UNSCHEDULABLE = "unschedulable"  # does not fit now; may fit after others finish
    UNRESOLVABLE = "unresolvable"  # can never fit this pool as it is built
    ERROR = "error"  # invalid request


@dataclass(frozen=True, slots=True)
class Status:
    code: Code
    message: str = ""

    @property
    def ok(self) -> bool:
        return self.code is Code.SUCCESS


@dataclass(frozen=True, slots=True)
class MemberShape:
    """What one member needs: CPU, memory, and k whole GPUs or ``milli`` of one GPU."""

    cpu_milli: int
    memory_mib: int
    whole: int = 0  # whole accelerators
    milli: int = 0  # fraction of one accelerator (whole == 0)
    gpu_memory_mib: int = 0  # fraction's memory; 0 = proportional to milli
    constraints: Constraints = Constraints()

    @classmethod
    def of(cls, req: Request) -> MemberShape:
        if req.gpus:
            return cls(req.cpu_milli, req.memory_mib, whole=req.gpus, constraints=req.constraints)
        milli = req.gpu_milli or (1 if req.gpu_memory_mib else 0)
        return cls(req.cpu_milli, req.memory_mib, milli=milli,
                   gpu_memory_mib=req.gpu_memory_mib, constraints=req.constraints)

    @property
    def gpu_milli_total(self) -> int:
        return self.whole * WHOLE + self.milli


@dataclass(slots=True)
class Candidates:
    """Feasible spots for one member: node index, GPU index (fraction) or GPU mask (whole)."""

    nodes: np.ndarray
    gpus: np.ndarray | None = None  # (C,) fraction: which accelerator
    chosen: np.ndarray | None = None  # (C, G) whole: which accelerators

    def __len__(self) -> int:
        return len(self.nodes)


@dataclass(slots=True)
class Context:
    """Per-cycle shared things score plugins may use (caches, gang so far, node ranks)."""

    state: ClusterState
    caches: dict = field(default_factory=dict)
    gang_nodes: set[int] = field(default_factory=set)


class ScorePlugin(Protocol):
    name: str

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray: ...


class Plan:
    """Assume claims on the state; ``rollback`` undoes them (to a savepoint), ``commit`` keeps them."""

    def __init__(self, state: ClusterState):
        self.state = state
        self.log: list[ClaimUndo] = []

    def assume(self, claim: Claim) -> None:
        self.state.take(claim)
        self.log.append(ClaimUndo(claim, taken=True))

    def release(self, claim: Claim) -> None:
        self.state.give(claim)
        self.log.append(ClaimUndo(claim, taken=False))

    def savepoint(self) -> int:
        return len(self.log)

    def rollback(self, to: int = 0) -> None:
        while len(self.log) > to:
            entry = self.log.pop()
            (self.state.give if entry.taken else self.state.take)(entry.claim)

    def commit(self) -> None:
        self.log.clear()


@dataclass(slots=True)
class Profile:
    """A named policy: score plugins with weights (no scorer = lowest node rank wins)."""

    name: str
    scorers: list[tuple[ScorePlugin, float]]

    def pick(self, ctx: Context, shape: MemberShape, cands: Candidates) -> int:
        """Index into ``cands`` of the best spot (caller ensures ``len(cands) > 0``)."""
        if len(cands) == 1:
            return 0
        total = self.total(ctx, shape, cands)
        best = np.flatnonzero(total >= total.max() - 1e-9)
        if len(best) == 1:
            return int(best[0])
        ranks = ctx.state.rank[cands.nodes[best]]
        return int(best[np.argmin(ranks)])

    def total(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        """Weighted score of every spot; interchangeable spots are scored once."""
        state = ctx.state
        if not self.scorers:
            return np.zeros(len(cands))
        if len(cands) > 32 and not ctx.gang_nodes and not state.has_topology:
            key = state.signature()[cands.nodes]
            if cands.gpus is not None:
                g = cands.gpus
                gpu_key = (state.gpu_free[cands.nodes, g] | (state.gpu_model[cands.nodes, g] << 11)
                           | (state.gpu_mem_free[cands.nodes, g] << 22))
                key = key * np.int64(1099511628211) + gpu_key
            _, first, inverse = np.unique(key, return_index=True, return_inverse=True)
            if len(first) < len(cands):
                reps = Candidates(cands.nodes[first],
                                  None if cands.gpus is None else cands.gpus[first],
                                  None if cands.chosen is None else cands.chosen[first])
                return self._weighted(ctx, shape, reps)[inverse.ravel()]
        return self._weighted(ctx, shape, cands)

    def _weighted(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        total = np.zeros(len(cands))
        for plugin, weight in self.scorers:
            total += weight * plugin.score(ctx, shape, cands)
        return total
