"""Contention: which nodes each shape of the target workload could ever use (by accelerator model
and constraint, GPU count, CPU and memory), against the free GPU of those nodes now; room that
demand with few places to go depends on is worth more.

Nodes fall into classes (the same models, GPU count, CPU and memory). Each set A of classes that
a share q_A of the workload's GPU demand could run on (an unconstrained fraction: almost all;
``V100M16|V100M32``: the V100 classes; 8 GPUs with 120 cores: the few 8-GPU nodes that large)
has a supply S_A, the free GPU milli on A's nodes now. A class k then carries demand
pi_k = sum over A containing k of q_A / S_A per free milli; against the pool's average
(sum q_A / all free milli), rho_k = pi_k / average. rho_k > 1: room on k is taken from demand
with fewer places to go than the average. Where every shape could use every node, rho is 1.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.frag import TaskShape, Workload
from controlplane.scheduler.state import ClusterState


def node_classes(state: ClusterState) -> tuple[np.ndarray, list[tuple]]:
    """(class of each node, per class: (models, GPU count, CPU milli, memory MiB))."""
    index: dict[tuple, int] = {}
    of = np.zeros(state.n, np.int64)
    for i in range(state.n):
        valid = state.gpu_valid[i]
        models = tuple(sorted({state.models[m] for m in state.gpu_model[i][valid].tolist()}))
        key = (models, int(valid.sum()), int(state.cpu_cap[i]), int(state.mem_cap[i]))
        of[i] = index.setdefault(key, len(index))
    return of, list(index)


def could_use(shape: TaskShape, models: tuple[str, ...], gpus: int, cpu: int, memory: int) -> bool:
    """Whether ``shape`` fits an empty node of that class."""
    return (gpus >= shape.num_gpu and cpu >= shape.cpu_milli and memory >= shape.memory_mib
            and any(not shape.models or m in shape.models for m in models))


class Contention:
    """rho per node class for ``workload`` on ``state``, kept current as nodes change."""

    def __init__(self, state: ClusterState, workload: Workload):
        self.state = state
        self.node_class, classes = node_classes(state)
        groups: dict[tuple[bool, ...], float] = {}
        for shape, share in workload.demand.items():
            usable = tuple(could_use(shape, *c) for c in classes)
            if any(usable):  # demand that fits nowhere presses on nothing
                groups[usable] = groups.get(usable, 0.0) + share
        self.allow = np.array(list(groups), bool).reshape(len(groups), len(classes))
        self.demand = np.array(list(groups.values()), float)
        self.active = bool(len(groups)) and not self.allow.all()
        self.free = np.zeros(len(classes))  # free GPU milli per class
        self._node_free = np.zeros(state.n)
        if self.active:
            self._node_free = np.where(state.gpu_valid, state.gpu_free, 0).sum(axis=1).astype(float)
            np.add.at(self.free, self.node_class, self._node_free)
            state.listeners.append(self._changed)

    def _changed(self, i: int) -> None:
        free = float(self.state.gpu_free[i][self.state.gpu_valid[i]].sum())
        self.free[self.node_class[i]] += free - self._node_free[i]
        self._node_free[i] = free

    def rho(self) -> np.ndarray:
        """Relative demand per free milli of each class (1: like the pool as a whole)."""
        supply = np.maximum(self.allow @ self.free, WHOLE)  # an exhausted set: one GPU, not 0
        per_class = (self.demand / supply) @ self.allow
        return per_class / (self.demand.sum() / max(self.free.sum(), WHOLE))
