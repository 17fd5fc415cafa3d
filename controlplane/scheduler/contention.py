"""Model contention: which accelerator models the target workload's demand may use, against the
free GPU of those models; room on a model that constrained demand needs is worth more.

Each set A of models that some share q_A of the workload's GPU demand may run on (no
constraint: every model) has a supply S_A, the free GPU milli on A's models now. A model k
then carries demand pi_k = sum over A containing k of q_A / S_A per free milli; against the
pool's average (sum q_A / all free milli), rho_k = pi_k / average. rho_k > 1: taking room on
k takes it from demand with fewer places to go. With no constrained demand, rho is 1 everywhere.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.frag import Workload
from controlplane.scheduler.framework import Candidates
from controlplane.scheduler.state import ClusterState


class ModelContention:
    """rho per model for ``workload`` on ``state``, kept current as nodes change."""

    def __init__(self, state: ClusterState, workload: Workload):
        self.state = state
        models = state.models
        groups = [(tuple(not allowed or m in allowed for m in models), share)
                  for allowed, share in workload.demand_by_models.items() if share > 0]
        self.allow = np.array([g for g, _ in groups], bool).reshape(len(groups), len(models))
        self.demand = np.array([share for _, share in groups], float)
        self.active = bool(len(groups)) and not self.allow.all()
        self._model = np.clip(state.gpu_model, 0, None)
        self._node_free = np.zeros((state.n, len(models)))
        if self.active:
            for i in range(state.n):
                self._node_free[i] = self._free_row(i)
            state.listeners.append(self._changed)
        self.free = self._node_free.sum(axis=0)  # free GPU milli per model

    def _free_row(self, i: int) -> np.ndarray:
        valid = self.state.gpu_valid[i]
        return np.bincount(self._model[i][valid], self.state.gpu_free[i][valid],
                           minlength=len(self.state.models))

    def _changed(self, i: int) -> None:
        row = self._free_row(i)
        self.free += row - self._node_free[i]
        self._node_free[i] = row

    def rho(self) -> np.ndarray:
        """Relative demand per free milli of each model (1: like the pool as a whole)."""
        supply = np.maximum(self.allow @ self.free, WHOLE)  # an exhausted set: one GPU, not 0
        per_model = (self.demand / supply) @ self.allow
        return per_model / (self.demand.sum() / max(self.free.sum(), WHOLE))

    def of_spots(self, cands: Candidates) -> np.ndarray | float:
        """rho of the model(s) each spot takes (a whole-GPU spot: its accelerators' mean)."""
        rho = self.rho()
        if cands.gpus is not None:
            return rho[self._model[cands.nodes, cands.gpus]]
        if cands.chosen is not None:
            picked = cands.chosen.sum(axis=1)
            return (rho[self._model[cands.nodes]] * cands.chosen).sum(axis=1) / np.maximum(picked, 1)
        return 1.0
