"""GPU fragmentation (FGD, USENIX ATC'23) with an incremental per-node cache.

A node's fragmentation F_n = sum over typical task shapes m of p_m * F_n(m), where F_n(m) is
all its free GPU milli when m cannot run there, else the free milli on GPUs too small for m.
The cache keeps per node and per (gpu_milli, allowed models) threshold the count and sum of
GPUs that are large enough, so a candidate placement's new F_n costs O(shapes), not O(nodes).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.state import ClusterState


@dataclass(frozen=True, slots=True)
class TaskShape:
    """A pod shape of the target workload: CPU, memory, GPU count, milli per GPU, allowed models."""

    cpu_milli: int
    num_gpu: int
    gpu_milli: int
    models: tuple[str, ...] = ()
    memory_mib: int = 0


class Workload:
    """The typical shapes M with weights p_m (most frequent first, covering ``coverage`` of pods),
    and ``demand``: the share of the GPU demand of every shape, rare ones included (what
    ``contention`` needs: a rare shape may be the only one that needs some nodes)."""

    def __init__(self, shapes: Sequence[TaskShape], weights: Sequence[float],
                 demand: dict[TaskShape, float] | None = None):
        self.shapes = list(shapes)
        total = float(sum(weights)) or 1.0
        self.weights = [w / total for w in weights]
        self.demand = gpu_demand(zip(self.shapes, self.weights) if demand is None else demand.items())

    @classmethod
    def typical(cls, pods: Iterable[TaskShape], coverage: float = 0.95) -> Workload:
        """Keep the most popular shapes until they cover ``coverage`` of the pods (paper's M)."""
        counts = Counter(pods)
        total = sum(counts.values())
        ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0].num_gpu, kv[0].gpu_milli,
                                                         kv[0].cpu_milli, kv[0].models))
        kept, covered = [], 0
        for shape, count in ordered:
            if covered >= coverage * total:
                break
            kept.append((shape, count))
            covered += count
        return cls([s for s, _ in kept], [c for _, c in kept], dict(ordered))


def gpu_demand(counted: Iterable[tuple[TaskShape, float]]) -> dict[TaskShape, float]:
    """Each shape's share of the GPU milli of ``(shape, count)`` pairs (shapes without GPU left out)."""
    out: dict[TaskShape, float] = {}
    for shape, count in counted:
        if shape.num_gpu * shape.gpu_milli > 0:
            out[shape] = out.get(shape, 0.0) + count * shape.num_gpu * shape.gpu_milli
    total = sum(out.values()) or 1.0
    return {shape: milli / total for shape, milli in out.items()}


class FragCache:
    """Per-node fragmentation of ``state`` against ``workload``, kept current by a listener."""

    def __init__(self, state: ClusterState, workload: Workload):
        self.state = state
        gpu_shapes = [(s, p) for s, p in zip(workload.shapes, workload.weights) if s.num_gpu > 0]
        n_models = len(state.models)
        thresholds: dict[tuple[int, tuple[bool, ...]], int] = {}
        t_of, cpu, k, p = [], [], [], []
        for shape, weight in gpu_shapes:
            allow = tuple(not shape.models or m in shape.models for m in state.models)
            key = (shape.gpu_milli, allow)
            t_of.append(thresholds.setdefault(key, len(thresholds)))
            cpu.append(shape.cpu_milli)
            k.append(shape.num_gpu)
            p.append(weight)
        self.g_t = np.array([g for g, _ in thresholds], np.int64)
        allow_t = np.array([a for _, a in thresholds], bool).reshape(len(thresholds), n_models)
        self.t_of = np.array(t_of, np.int64)
        self.c_m = np.array(cpu, np.int64)
        self.k_m = np.array(k, np.int64)
        self.p_m = np.array(p, np.float64)
        # allowed[n, j, t]: GPU j of node n may serve threshold t (valid and of an allowed model)
        model = np.clip(state.gpu_model, 0, None)
        self.allowed = (allow_t.T[model] if n_models else
                        np.zeros((state.n, state.g, len(thresholds)), bool))
        self.allowed &= state.gpu_valid[:, :, None]
        # whole GPUs taken on a node of one model free the same thresholds per GPU: a fast path
        self.allow_by_model = allow_t.T.astype(np.int64)  # (models, thresholds)
        first = model[:, 0] if state.g else np.zeros(state.n, np.int64)
        same = ((model == first[:, None]) | ~state.gpu_valid).all(axis=1) & state.gpu_valid.any(axis=1)
        self.node_model = np.where(same, first, -1)
        self.cnt = np.zeros((state.n, len(thresholds)), np.int64)
        self.sum = np.zeros((state.n, len(thresholds)), np.int64)
        self.total = np.zeros(state.n, np.int64)
        self._frag_n = np.zeros(state.n, np.float64)
        self.dirty: set[int] = set()
        self._refresh(np.arange(state.n))
        state.listeners.append(self.dirty.add)

    def flush(self) -> None:
        """Recompute the nodes changed since the last read (a preemption may touch many)."""
        if len(self.dirty) == 1:  # the usual case: one placement; a slice indexes by view
            i = self.dirty.pop()
            self._refresh(slice(i, i + 1))
        elif self.dirty:
            self._refresh(np.fromiter(self.dirty, np.int64, len(self.dirty)))
            self.dirty.clear()

    @property
    def frag(self) -> np.ndarray:
        """F_n of every node, current."""
        self.flush()
        return self._frag_n

    def _refresh(self, rows: np.ndarray | slice) -> None:
        free = self.state.gpu_free[rows]
        ge = self.allowed[rows] & (free[:, :, None] >= self.g_t[None, None, :])
        self.cnt[rows] = ge.sum(axis=1)
        self.sum[rows] = (ge * free[:, :, None]).sum(axis=1)
        self.total[rows] = free.sum(axis=1)
        self._frag_n[rows] = self._frag(self.cnt[rows], self.sum[rows], self.total[rows],
                                        self.state.cpu_free[rows])

    def _frag(self, cnt, sums, total, cpu) -> np.ndarray:
        """F_n from per-threshold counts and sums (the paper's, which ignores host memory)."""
        q3 = (cnt[:, self.t_of] >= self.k_m) & (cpu[:, None] >= self.c_m)
        return total - (q3 * sums[:, self.t_of]) @ self.p_m

    def cluster_frag(self) -> float:
        """Fragmented GPU milli of the whole cluster (sum of F_n)."""
        return float(self.frag.sum())

    def delta_fraction(self, nodes: np.ndarray, gpus: np.ndarray, milli: int, cpu: int) -> np.ndarray:
        """dF of putting ``milli`` of GPU ``gpus[c]`` (plus ``cpu``) on node ``nodes[c]``."""
        self.flush()
        f = self.state.gpu_free[nodes, gpus]
        f2 = f - milli
        a = self.allowed[nodes, gpus]
        before = a & (f[:, None] >= self.g_t)
        after = a & (f2[:, None] >= self.g_t)
        cnt = self.cnt[nodes] - before + after
        sums = self.sum[nodes] - f[:, None] * before + f2[:, None] * after
        new = self._frag(cnt, sums, self.total[nodes] - milli, self.state.cpu_free[nodes] - cpu)
        return new - self._frag_n[nodes]

    def delta_whole(self, nodes: np.ndarray, chosen: np.ndarray, k: int, cpu: int) -> np.ndarray:
        """dF of taking the ``k`` whole GPUs marked in ``chosen[c]`` (plus ``cpu``) on ``nodes[c]``."""
        self.flush()
        models = self.node_model[nodes]
        if len(models) and models.min() >= 0:
            taken = k * self.allow_by_model[models]
        else:
            taken = (chosen[:, :, None] & self.allowed[nodes]).sum(axis=1)
        new = self._frag(self.cnt[nodes] - taken, self.sum[nodes] - WHOLE * taken,
                         self.total[nodes] - WHOLE * k, self.state.cpu_free[nodes] - cpu)
        return new - self._frag_n[nodes]
