"""The default policy ``gpupool``: FGD's fragmentation gradient plus what FGD misses.

score = floor(-(dF + a * dStranded + b * dWaste) / bucket) - round(c * dContention / bucket),
ties to the lowest node rank.

- dF: the paper's fragmentation change for the typical task shapes (``frag.FragCache``),
  but each shape weighted by popularity x sqrt(its GPU demand) instead of popularity alone:
  what is lost when a GPU-hungry shape no longer fits is more GPU (big jobs stop failing
  early), without letting the rare 8-GPU shapes drown the common fractions.
- dStranded: GPU a node can no longer use because its CPU or memory runs out first. The
  typical workload asks for ``gpu_per_cpu`` GPU milli per CPU milli (and per MiB); a node
  whose free CPU (or memory) times that ratio is below its free GPU strands the rest.
- dWaste: on the accelerator a fraction lands on, how much of what is left no combination
  of the typical fractional sizes can ever fill (a small knapsack table over 0..1000 milli).
  FGD only asks "does shape m still fit"; this asks "can the hole be closed". Sizes under a
  fifth of a GPU do not count as fillers: such pods are few and already go to the tightest
  holes, so a plan that needs them to close a new hole mostly leaves that hole open. Only
  sizes whose constraints allow the accelerator's model count (one table per model).
- dContention: the member's GPU milli times (rho - 1) of the node class it lands on
  (``contention.Contention``): where part of the demand can run only on some nodes (a model
  constraint, or a size only a few nodes have), room that more demand depends on, per free
  GPU, than on average costs more, so work that could go anywhere leaves it to the work that
  has nowhere else to go. It counts in whole buckets of its own (spots of one class keep the
  order the other terms give them) and only beyond a slack of 0.25 around 1 (smaller
  differences are the mix's noise; acting on them breaks idle big nodes for nothing). FGD's dF even pulls the other way: it counts all free GPU of a node
  that a shape cannot use as fragmented, so filling the nodes that constrained or big shapes
  cannot use looks like progress however scarce they are.
- bucket: equal buckets pack like first-fit over a fixed node order, which is what makes
  FGD work at all; a linear bucket keeps that property without sigmoid saturation.
Nothing here is tuned to one trace: every input is derived from the target workload.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.contention import Contention
from controlplane.scheduler.frag import FragCache, Workload
from controlplane.scheduler.framework import Candidates, Context, MemberShape
from controlplane.scheduler.plugins.scores import frag_delta

STRANDED_WEIGHT = 0.5  # a stranded GPU may still be used by a CPU-light pod: half a fragment
WASTE_WEIGHT = 2.0  # a hole no typical size can close is lost for good: twice a fragment
BUCKET_MILLI = 100.0  # spots whose cost differs by less than this tie (first-fit packing)
DEMAND_EXPONENT = 0.5  # shape weight = popularity x demand ** this (sqrt: big jobs count, not drown)
MIN_FILLER_MILLI = 200  # rarer tiny sizes already go to the tightest holes; they close no new one
CONTENTION_WEIGHT = 1.0  # GPU on nodes twice as contended as average costs one fragment more
CONTENTION_SLACK = 0.25  # rho within a quarter of 1 is the mix's noise, not a need: ignored
NO_LIMIT = 1e12  # GPU per CPU (or MiB) when the workload asks for no CPU (memory): never short


def waste_table(sizes: list[int]) -> np.ndarray:
    """waste[r]: milli of a hole of r milli that no sum of ``sizes`` can fill."""
    best = np.zeros(WHOLE + 1, np.int64)  # best[r]: largest sum of sizes <= r
    for r in range(1, WHOLE + 1):
        b = best[r - 1]
        for g in sizes:
            if g <= r and g + best[r - g] > b:
                b = g + best[r - g]
        best[r] = b
    return np.arange(WHOLE + 1) - best


class GpuPool:
    name = "gpupool"

    def __init__(self, stranded_weight: float = STRANDED_WEIGHT, waste_weight: float = WASTE_WEIGHT,
                 bucket_milli: float = BUCKET_MILLI, demand_exponent: float = DEMAND_EXPONENT,
                 min_filler_milli: int = MIN_FILLER_MILLI,
                 contention_weight: float = CONTENTION_WEIGHT):
        self.demand_exponent = demand_exponent
        self.min_filler_milli = min_filler_milli
        self.stranded_weight = stranded_weight
        self.waste_weight = waste_weight
        self.bucket_milli = bucket_milli
        self.contention_weight = contention_weight

    def prepare(self, ctx: Context) -> None:
        """Build the demand-weighted fragmentation, the GPU-per-CPU/MiB ratio, the model
        contention and one waste table per model."""
        workload = ctx.workload
        workload = Workload(workload.shapes, [
            p * max(s.num_gpu * s.gpu_milli, 1) ** self.demand_exponent
            for s, p in zip(workload.shapes, workload.weights)])
        self.frag = FragCache(ctx.state, workload)
        pairs = list(zip(workload.shapes, workload.weights))
        gpu = sum(p * s.num_gpu * s.gpu_milli for s, p in pairs)
        cpu = sum(p * s.cpu_milli for s, p in pairs)
        mem = sum(p * s.memory_mib for s, p in pairs)
        self.gpu_per_cpu = gpu / cpu if cpu else NO_LIMIT
        self.gpu_per_mib = gpu / mem if mem else NO_LIMIT
        self.contention = Contention(ctx.state, ctx.workload)
        self.model_row = np.clip(ctx.state.gpu_model, 0, None)  # waste table row per accelerator
        self._state = ctx.state
        self._stranded = self.stranded(self.frag.total, ctx.state.cpu_free, ctx.state.mem_free)
        self._stranded_dirty: set[int] = set()
        ctx.state.listeners.append(self._stranded_dirty.add)
        tables: dict[tuple[int, ...], np.ndarray] = {}
        self.waste = np.zeros((max(len(ctx.state.models), 1), WHOLE + 1), np.int64)
        for k, model in enumerate(ctx.state.models):
            sizes = tuple(sorted({s.gpu_milli for s in workload.shapes
                                  if s.num_gpu == 1 and self.min_filler_milli <= s.gpu_milli < WHOLE
                                  and (not s.models or model in s.models)}))
            if sizes not in tables:
                tables[sizes] = waste_table(list(sizes))
            self.waste[k] = tables[sizes]

    def stranded(self, gpu: np.ndarray, cpu: np.ndarray, mem: np.ndarray) -> np.ndarray:
        """GPU milli that the CPU and memory left cannot feed at the workload's ratios."""
        usable = np.minimum(cpu * self.gpu_per_cpu, mem * self.gpu_per_mib)
        return np.maximum(0.0, gpu - usable)

    def stranded_now(self) -> np.ndarray:
        """Stranded GPU milli of every node, current (changed nodes refreshed on read)."""
        if self._stranded_dirty:
            rows = np.fromiter(self._stranded_dirty, np.int64, len(self._stranded_dirty))
            self._stranded_dirty.clear()
            self.frag.flush()
            state = self._state
            self._stranded[rows] = self.stranded(self.frag.total[rows], state.cpu_free[rows],
                                                 state.mem_free[rows])
        return self._stranded

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        state = ctx.state
        delta = frag_delta(self.frag, shape, cands)
        if self.stranded_weight:
            nodes = cands.nodes
            after = self.stranded(self.frag.total[nodes] - shape.gpu_milli_total,
                                  state.cpu_free[nodes] - shape.cpu_milli,
                                  state.mem_free[nodes] - shape.memory_mib)
            after -= self.stranded_now()[nodes]
            delta += self.stranded_weight * after
        if self.waste_weight and cands.gpus is not None:
            model = self.model_row[cands.nodes, cands.gpus]
            free = state.gpu_free[cands.nodes, cands.gpus]
            waste = self.waste[model, free - shape.milli] - self.waste[model, free]
            delta += self.waste_weight * waste
        score = np.floor(-delta / self.bucket_milli)
        if self.contention_weight and self.contention.active and shape.uses_gpu:
            # whole buckets of its own: spots of one node class keep the order (and the ties)
            # the other terms give them, whatever rho is
            rho = self.contention.rho()  # per node class: a handful of numbers
            excess = np.where(np.abs(rho - 1.0) < CONTENTION_SLACK, 0.0, rho - 1.0)
            cost = np.round(self.contention_weight * excess * shape.gpu_milli_total / self.bucket_milli)
            score -= cost[self.contention.node_class[cands.nodes]]
        return score
