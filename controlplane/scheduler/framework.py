"""Plugin framework: a member shape, its candidate spots, a typed context, weighted scorers and
the Plan, the one transaction of a cycle.

Shaped like the Kubernetes scheduler framework, but vectorised: the fit filter yields every
feasible (node, accelerators) spot of one member at once, each score plugin returns one number
per spot, and the Profile picks the best weighted sum (ties: lowest node rank). A Plan records
every capacity claim, quota charge and gang membership, so a gang or a preemption is assumed,
then committed or rolled back as a whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from controlplane.core.resources import WHOLE, Constraints, Request
from controlplane.scheduler.frag import FragCache, Workload
from controlplane.scheduler.queues import Held, QuotaBook
from controlplane.scheduler.state import Claim, ClusterState

DEDUP_MIN_SPOTS = 32  # below this many spots, scoring each is cheaper than finding duplicates
SCORE_TIE = 1e-9  # weighted sums closer than this are equal (float noise of the weights)


@dataclass(frozen=True, slots=True)
class MemberShape:
    """What one member needs: CPU, memory, k whole GPUs or ``milli`` of one GPU, and until when
    (``ends_at``: its declared end on the snapshot clock; inf when it declares no run time)."""

    cpu_milli: int
    memory_mib: int
    whole: int = 0  # whole accelerators
    milli: int = 0  # fraction of one accelerator (whole == 0)
    gpu_memory_mib: int = 0  # fraction's memory; 0 = proportional to milli
    constraints: Constraints = Constraints()
    ends_at: float = math.inf
    _hash: int = field(default=0, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:  # shapes key every per-cycle cache: hash them once
        object.__setattr__(self, "_hash", hash((self.cpu_milli, self.memory_mib, self.whole, self.milli,
                                                self.gpu_memory_mib, self.constraints, self.ends_at)))

    def __hash__(self) -> int:
        return self._hash

    @classmethod
    def of(cls, req: Request, ends_at: float = math.inf) -> MemberShape:
        if req.gpus:
            return cls(req.cpu_milli, req.memory_mib, whole=req.gpus, constraints=req.constraints,
                       ends_at=ends_at)
        milli = req.gpu_milli or (1 if req.gpu_memory_mib else 0)
        return cls(req.cpu_milli, req.memory_mib, milli=milli, gpu_memory_mib=req.gpu_memory_mib,
                   constraints=req.constraints, ends_at=ends_at)

    @property
    def gpu_milli_total(self) -> int:
        return self.whole * WHOLE + self.milli

    @property
    def uses_gpu(self) -> bool:
        return bool(self.whole or self.milli)


@dataclass(slots=True)
class Candidates:
    """Feasible spots for one member: node index, GPU index (fraction) or GPU mask (whole)."""

    nodes: np.ndarray
    gpus: np.ndarray | None = None  # (C,) fraction: which accelerator
    chosen: np.ndarray | None = None  # (C, G) whole: which accelerators

    def __len__(self) -> int:
        return len(self.nodes)

    def take(self, keep: np.ndarray) -> Candidates:
        """The spots selected by ``keep`` (a mask or index array)."""
        return Candidates(self.nodes[keep], None if self.gpus is None else self.gpus[keep],
                          None if self.chosen is None else self.chosen[keep])


class Context:
    """What the filter and score plugins share in one cycle (or one trace replay): the state,
    the target workload, per-constraint accelerator masks, the paper's fragmentation of the
    workload (built on first use) and the nodes of the gang being placed (kept by the Plan)."""

    __slots__ = ("state", "workload", "gang", "_allowed", "_models", "_fraction_memory",
                 "_fragmentation")

    def __init__(self, state: ClusterState, workload: Workload | None = None):
        self.state = state
        self.workload = workload if workload is not None else Workload([], [])
        self.gang: set[int] = set()
        self._allowed: dict[Constraints, np.ndarray] = {}
        self._models: dict[Constraints, list[str]] = {}
        self._fraction_memory: dict[int, np.ndarray] = {}
        self._fragmentation: FragCache | None = None

    def allowed(self, constraints: Constraints) -> np.ndarray:
        """(N, G) accelerators that satisfy ``constraints``."""
        mask = self._allowed.get(constraints)
        if mask is None:
            mask = self._allowed[constraints] = self.state.allowed(constraints)
        return mask

    def allowed_models(self, constraints: Constraints) -> list[str]:
        """The pool's accelerator models that satisfy ``constraints`` (for messages)."""
        models = self._models.get(constraints)
        if models is None:
            ids = np.unique(self.state.gpu_model[self.allowed(constraints)]).tolist()
            models = self._models[constraints] = [self.state.models[i] for i in ids if i >= 0]
        return models

    def fraction_memory(self, milli: int) -> np.ndarray:
        """(N, G) MiB a fraction of ``milli`` takes on each accelerator (proportional share)."""
        memory = self._fraction_memory.get(milli)
        if memory is None:
            memory = self._fraction_memory[milli] = self.state.acc_mem_cap * milli // WHOLE
        return memory

    @property
    def fragmentation(self) -> FragCache:
        """The FGD paper's per-node fragmentation of ``workload``, kept current."""
        if self._fragmentation is None:
            self._fragmentation = FragCache(self.state, self.workload)
        return self._fragmentation


class ScorePlugin(Protocol):
    """One score stage: ``prepare`` once per context, then one number per spot (higher wins)."""

    name: str

    def prepare(self, ctx: Context) -> None: ...

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray | float: ...


_TAKE, _GIVE, _CHARGE, _JOIN = range(4)


class Plan:
    """The cycle's transaction: capacity claims on the state, quota charges on the book and the
    gang's nodes, undone together by ``rollback`` (to a savepoint) and kept by ``commit``.

    Between jobs the plan is committed, so every job starts with an empty gang."""

    def __init__(self, ctx: Context, book: QuotaBook | None = None):
        self.ctx = ctx
        self.state = ctx.state
        self.book = book
        self.log: list[tuple] = []

    def assume(self, claim: Claim) -> None:
        self.state.take(claim)
        self.log.append((_TAKE, claim))

    def release(self, claim: Claim) -> None:
        self.state.give(claim)
        self.log.append((_GIVE, claim))

    def charge(self, queue: str, request: Request, held: Held, sign: int = 1) -> None:
        """Count (``sign`` 1) or uncount (-1) a job's GPU, CPU and memory against its queue."""
        if self.book is not None:
            self.book.add(queue, request, held, sign)
            self.log.append((_CHARGE, queue, request, held, sign))

    def join_gang(self, node: int) -> None:
        if node not in self.ctx.gang:
            self.ctx.gang.add(node)
            self.log.append((_JOIN, node))

    def savepoint(self) -> int:
        return len(self.log)

    def rollback(self, to: int = 0) -> None:
        while len(self.log) > to:
            entry = self.log.pop()
            kind = entry[0]
            if kind == _TAKE:
                self.state.give(entry[1])
            elif kind == _GIVE:
                self.state.take(entry[1])
            elif kind == _CHARGE:
                self.book.add(entry[1], entry[2], entry[3], -entry[4])
            else:
                self.ctx.gang.discard(entry[1])

    def commit(self) -> None:
        self.log.clear()
        self.ctx.gang.clear()


@dataclass(slots=True)
class Profile:
    """A named policy: score plugins with weights (no scorer = lowest node rank wins).
    Its plugins serve one context at a time: ``prepare`` binds them to it."""

    name: str
    scorers: list[tuple[ScorePlugin, float]] = field(default_factory=list)

    def prepare(self, ctx: Context) -> None:
        for plugin, _ in self.scorers:
            plugin.prepare(ctx)

    def pick(self, ctx: Context, shape: MemberShape, cands: Candidates) -> int:
        """Index into ``cands`` of the best spot (caller ensures ``len(cands) > 0``)."""
        if len(cands) == 1 or not self.scorers:
            return 0 if len(cands) == 1 else int(np.argmin(ctx.state.rank[cands.nodes]))
        total = self.total(ctx, shape, cands)
        best = np.flatnonzero(total >= total.max() - SCORE_TIE)
        if len(best) == 1:
            return int(best[0])
        ranks = ctx.state.rank[cands.nodes[best]]
        return int(best[np.argmin(ranks)])

    def total(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        """Weighted score of every spot; interchangeable spots are scored once."""
        state = ctx.state
        if not self.scorers:
            return np.zeros(len(cands))
        if len(cands) > DEDUP_MIN_SPOTS and not ctx.gang and not state.has_topology:
            key = state.spot_keys(cands.nodes, cands.gpus)
            perm = key.argsort()  # equal keys score alike, so any one of a group stands for it
            ordered = key[perm]
            first = np.empty(len(key), bool)
            first[0] = True
            np.not_equal(ordered[1:], ordered[:-1], out=first[1:])
            if not first.all():
                inverse = np.empty(len(key), np.intp)
                inverse[perm] = np.cumsum(first) - 1
                return self._weighted(ctx, shape, cands.take(perm[first]))[inverse]
        return self._weighted(ctx, shape, cands)

    def _weighted(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        total = np.zeros(len(cands))
        for plugin, weight in self.scorers:
            total += weight * plugin.score(ctx, shape, cands)
        return total
