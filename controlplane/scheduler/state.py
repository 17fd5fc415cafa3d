"""Cluster state as numpy arrays: free CPU, memory and per-accelerator milli/MiB of every node.

The scheduler and the trace benchmark both place onto this one structure. Every change goes
through ``take``/``give`` so listeners (fragmentation caches) update only the node touched,
and a Plan can undo it; nothing copies the whole snapshot per job.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from controlplane.core.resources import WHOLE, Constraints, Node

HASH_MULT = np.int64(1099511628211)  # FNV-1a 64-bit prime: mixes a node's hash with a GPU's fields
MODEL_SHIFT, MEMORY_SHIFT = 11, 22  # free milli (<= 1000) fits 11 bits, model ids 11 more


@dataclass(frozen=True, slots=True)
class Claim:
    """One member's hold on one node: CPU, memory and (gpu index, milli, MiB) per accelerator."""

    node: int
    cpu_milli: int
    memory_mib: int
    gpus: tuple[tuple[int, int, int], ...] = ()


class ClusterState:
    """Free capacity of N nodes with up to G accelerators each (padding slots are invalid)."""

    def __init__(self, names: Sequence[str], cpu_free: Sequence[int], mem_free: Sequence[int],
                 gpu_free: np.ndarray, gpu_mem_free: np.ndarray, gpu_valid: np.ndarray,
                 gpu_model: np.ndarray, models: list[str], node_ok: Sequence[bool] | None = None,
                 gpu_domain: np.ndarray | None = None, gpu_numa: np.ndarray | None = None):
        self.names = list(names)
        self.index = {name: i for i, name in enumerate(self.names)}
        self.n = len(self.names)
        self.cpu_free = np.asarray(cpu_free, dtype=np.int64).copy()
        self.mem_free = np.asarray(mem_free, dtype=np.int64).copy()
        gpu_free = np.asarray(gpu_free, dtype=np.int64)
        self.gpu_free = (gpu_free.reshape(self.n, -1) if self.n else gpu_free.reshape(0, 0)).copy()
        self.g = self.gpu_free.shape[1]
        self.gpu_mem_free = np.asarray(gpu_mem_free, dtype=np.int64).reshape(self.n, self.g).copy()
        self.gpu_valid = np.asarray(gpu_valid, dtype=bool).reshape(self.n, self.g).copy()
        self.gpu_free[~self.gpu_valid] = 0
        self.gpu_mem_free[~self.gpu_valid] = 0
        self.gpu_model = np.asarray(gpu_model, dtype=np.int64).reshape(self.n, self.g)
        self.models = models
        self.node_ok = np.ones(self.n, dtype=bool) if node_ok is None else np.asarray(node_ok, bool)
        self.gpu_domain = gpu_domain if gpu_domain is not None else np.full((self.n, self.g), -1)
        self.gpu_numa = gpu_numa if gpu_numa is not None else np.full((self.n, self.g), -1)
        self.gpu_count = self.gpu_valid.sum(axis=1)
        # tie-break among equal scores: lower rank wins (name order unless a seed permutes it)
        self.rank = np.argsort(np.argsort(np.array(self.names, dtype=object), kind="stable"))
        self.listeners: list[Callable[[int], None]] = []
        self.uuids: list[list[str]] = [[] for _ in range(self.n)]
        self.where: dict[str, tuple[int, int]] = {}  # accelerator uuid -> (node, index)
        self.node_labels: list[dict[str, str]] = [{} for _ in range(self.n)]
        self.acc_labels: list[list[dict[str, str]]] = [[] for _ in range(self.n)]
        self.vendors: list[list[str]] = [[] for _ in range(self.n)]
        self.acc_mem_cap = self.gpu_mem_free.copy()
        self.cpu_cap = self.cpu_free.copy()  # whole-node capacity (for "can never fit")
        self.mem_cap = self.mem_free.copy()
        # held for a blocked queue head: only members ending by then may use the node (hold())
        self.free_until = np.full(self.n, np.inf)
        self._open = self.node_ok.copy()  # usable by any member: ready and not held
        self.has_topology = bool((self.gpu_domain >= 0).any() or (self.gpu_numa >= 0).any())
        self._sig = np.zeros(self.n, np.int64)
        self._distinct = np.zeros((self.n, self.g), bool)
        self._idle = np.zeros((self.n, self.g), bool)
        self._idle_count = np.zeros(self.n, np.int64)
        self._sig_dirty: set[int] = set(range(self.n))

    # ---- construction -------------------------------------------------------------------
    @classmethod
    def from_nodes(cls, nodes: Sequence[Node]) -> ClusterState:
        """Build from core Nodes; their allocations (running jobs) are already subtracted."""
        g = max([len(n.accelerators) for n in nodes] + [1])
        n = len(nodes)
        free = np.zeros((n, g), np.int64)
        mem = np.zeros((n, g), np.int64)
        cap = np.zeros((n, g), np.int64)
        valid = np.zeros((n, g), bool)
        model = np.full((n, g), -1, np.int64)
        domain = np.full((n, g), -1, np.int64)
        numa = np.full((n, g), -1, np.int64)
        model_id: dict[str, int] = {}
        domain_id: dict[tuple[int, str], int] = {}
        rows_of = [(i, j, a.free_milli, a.free_memory_mib, a.memory_mib, a.healthy,
                    model_id.setdefault(a.model, len(model_id)),
                    -1 if a.interconnect_domain is None
                    else domain_id.setdefault((i, a.interconnect_domain), len(domain_id)),
                    -1 if a.numa_node is None else a.numa_node)
                   for i, node in enumerate(nodes) for j, a in enumerate(node.accelerators)]
        if rows_of:  # one pass over the accelerators, one vectorised write per array
            cols = np.array(rows_of, np.int64).T
            at = (cols[0], cols[1])
            free[at], mem[at], cap[at], valid[at] = cols[2], cols[3], cols[4], cols[5].astype(bool)
            model[at], domain[at], numa[at] = cols[6], cols[7], cols[8]
        models = list(model_id)
        state = cls([x.name for x in nodes], [x.free_cpu_milli for x in nodes],
                    [x.free_memory_mib for x in nodes], free, mem, valid, model, models,
                    [not x.cordoned and x.ready for x in nodes], domain, numa)
        state.acc_mem_cap = cap
        state.cpu_cap = np.array([x.cpu_milli for x in nodes], np.int64)
        state.mem_cap = np.array([x.memory_mib for x in nodes], np.int64)
        for i, node in enumerate(nodes):
            state.uuids[i] = [a.uuid for a in node.accelerators]
            state.where.update((a.uuid, (i, j)) for j, a in enumerate(node.accelerators))
            state.node_labels[i] = node.labels  # read only
            state.acc_labels[i] = [a.labels for a in node.accelerators]
            state.vendors[i] = [a.vendor for a in node.accelerators]
        return state

    @classmethod
    def from_table(cls, names: Sequence[str], cpu: Sequence[int], mem: Sequence[int],
                   gpus: Sequence[int], models: Sequence[str],
                   gpu_memory_mib: int = 0) -> ClusterState:
        """Build an empty cluster from per-node rows (the trace's node CSV)."""
        n, g = len(names), max(list(gpus) + [1])
        model_names = sorted(set(models))
        ids = {m: k for k, m in enumerate(model_names)}
        valid = np.arange(g)[None, :] < np.asarray(gpus)[:, None]
        free = np.where(valid, WHOLE, 0)
        mem_free = np.where(valid, gpu_memory_mib or WHOLE, 0)
        model = np.repeat(np.array([ids[m] for m in models], np.int64)[:, None], g, axis=1)
        state = cls(names, cpu, mem, free, mem_free, valid, model, model_names)
        state.uuids = [[f"{names[i]}-gpu{j}" for j in range(gpus[i])] for i in range(n)]
        state.where = {u: (i, j) for i, row in enumerate(state.uuids) for j, u in enumerate(row)}
        state.vendors = [["nvidia"] * gpus[i] for i in range(n)]
        state.acc_labels = [[{} for _ in range(gpus[i])] for i in range(n)]
        return state

    # ---- mutation -------------------------------------------------------------------------
    def take(self, claim: Claim) -> None:
        """Allocate ``claim``; the caller has checked it fits."""
        self._apply(claim, -1)

    def give(self, claim: Claim) -> None:
        """Free ``claim`` (undo of ``take``, or a preempted job's member)."""
        self._apply(claim, +1)

    def _apply(self, claim: Claim, sign: int) -> None:
        i = claim.node
        self.cpu_free[i] += sign * claim.cpu_milli
        self.mem_free[i] += sign * claim.memory_mib
        for j, milli, mib in claim.gpus:
            self.gpu_free[i, j] += sign * milli
            self.gpu_mem_free[i, j] += sign * mib
        self._sig_dirty.add(i)
        for listener in self.listeners:
            listener(i)

    def _refresh_rows(self) -> None:
        """Recompute the per-node views of the nodes changed since the last read."""
        if not self._sig_dirty:
            return
        for i in self._sig_dirty:
            gpus = list(zip(self.gpu_free[i].tolist(), self.gpu_mem_free[i].tolist(),
                            self.gpu_model[i].tolist(), self.acc_mem_cap[i].tolist(),
                            self.gpu_valid[i].tolist()))
            self._sig[i] = hash((int(self.cpu_free[i]), int(self.mem_free[i]),
                                 bool(self.node_ok[i]), tuple(sorted(gpus))))
            seen: set[tuple] = set()
            for j, gpu in enumerate(gpus):
                self._distinct[i, j] = gpu[4] and gpu not in seen
                self._idle[i, j] = gpu[4] and gpu[0] == WHOLE and gpu[1] == gpu[3]
                seen.add(gpu)
            self._idle_count[i] = int(self._idle[i].sum())
        self._sig_dirty.clear()

    def signature(self) -> np.ndarray:
        """Per node, a hash of everything placement looks at; equal hash = interchangeable node
        (apart from its name, rank and topology)."""
        self._refresh_rows()
        return self._sig

    @property
    def distinct(self) -> np.ndarray:
        """(N, G) the first accelerator of each kind (free milli and MiB, model, size) on its
        node: a fraction scores the same on any accelerator of a kind, so only these are tried."""
        self._refresh_rows()
        return self._distinct

    @property
    def idle(self) -> np.ndarray:
        """(N, G) healthy accelerators with nothing on them (all compute and memory free)."""
        self._refresh_rows()
        return self._idle

    @property
    def idle_count(self) -> np.ndarray:
        """(N,) idle accelerators per node."""
        self._refresh_rows()
        return self._idle_count

    def spot_keys(self, nodes: np.ndarray, gpus: np.ndarray | None) -> np.ndarray:
        """Per spot, a hash of its node and (for a fraction) its accelerator: equal keys are
        interchangeable spots, which score alike."""
        key = self.signature()[nodes]
        if gpus is None:
            return key
        gpu_key = (self.gpu_free[nodes, gpus] | (self.gpu_model[nodes, gpus] << MODEL_SHIFT)
                   | (self.gpu_mem_free[nodes, gpus] << MEMORY_SHIFT))
        return key * HASH_MULT + gpu_key

    # ---- reservations and constraints -----------------------------------------------------
    @property
    def reserved(self) -> np.ndarray:
        """Nodes held for a blocked queue head."""
        return self.free_until < np.inf

    def hold(self, nodes: list[int], until: float) -> None:
        """Reserve ``nodes``: until ``until`` only members that end by then may use them."""
        self.free_until[nodes] = until
        self._open = self.node_ok & (self.free_until == np.inf)

    def usable(self, ends_at: float = np.inf, rows: slice | np.ndarray = slice(None)) -> np.ndarray:
        """Nodes (of ``rows``) a member ending at ``ends_at`` may use: ready, not cordoned, and
        free of any reservation that starts before it ends."""
        if ends_at == np.inf:
            return self._open[rows]
        return self.node_ok[rows] & (self.free_until[rows] >= ends_at)

    def allowed(self, c: Constraints) -> np.ndarray:
        """(N, G) healthy accelerators that satisfy ``c``."""
        mask = self.gpu_valid.copy()
        if c.models:
            ids = [i for i, m in enumerate(self.models) if m in c.models]
            mask &= np.isin(self.gpu_model, ids)
        if c.min_memory_mib:
            mask &= self.acc_mem_cap >= c.min_memory_mib
        if c.vendor or c.labels:
            for i, j in zip(*np.nonzero(mask)):
                if c.vendor and self.vendors[i][j] != c.vendor:
                    mask[i, j] = False
                    continue
                acc_labels = self.acc_labels[i][j] if self.acc_labels[i] else {}
                if any(acc_labels.get(k) != v and self.node_labels[i].get(k) != v
                       for k, v in c.labels):
                    mask[i, j] = False
        return mask
