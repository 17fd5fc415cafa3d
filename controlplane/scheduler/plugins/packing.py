"""The default policy ``gpupool``: FGD's fragmentation gradient plus two things FGD misses.

score = floor(-(dF + a * dStranded + b * dWaste) / bucket), ties to the lowest node rank.

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
  holes, so a plan that needs them to close a new hole mostly leaves that hole open.
- bucket: equal buckets pack like first-fit over a fixed node order, which is what makes
  FGD work at all; a linear bucket keeps that property without sigmoid saturation.
Nothing here is tuned to one trace: every input is derived from the target workload.
"""

from __future__ import annotations

import numpy as np

from controlplane.core.resources import WHOLE
from controlplane.scheduler.frag import FragCache, Workload
from controlplane.scheduler.framework import Candidates, Context, MemberShape
from controlplane.scheduler.plugins.scores import frag_cache, frag_delta


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

    def __init__(self, stranded_weight: float = 0.5, waste_weight: float = 2.0,
                 bucket_milli: float = 100.0, demand_exponent: float = 0.5,
                 min_filler_milli: int = 200):
        self.demand_exponent = demand_exponent
        self.min_filler_milli = min_filler_milli
        self.stranded_weight = stranded_weight
        self.waste_weight = waste_weight
        self.bucket_milli = bucket_milli

    def prepare(self, ctx: Context, workload: Workload) -> None:
        workload = Workload(workload.shapes, [
            p * max(s.num_gpu * s.gpu_milli, 1) ** self.demand_exponent
            for s, p in zip(workload.shapes, workload.weights)])
        ctx.caches["gpupool"] = FragCache(ctx.state, workload)
        pairs = list(zip(workload.shapes, workload.weights))
        gpu = sum(p * s.num_gpu * s.gpu_milli for s, p in pairs)
        cpu = sum(p * s.cpu_milli for s, p in pairs)
        mem = sum(p * s.memory_mib for s, p in pairs)
        ctx.caches["gpupool.ratio"] = (gpu / cpu if cpu else 1e12, gpu / mem if mem else 1e12)
        sizes = sorted({s.gpu_milli for s in workload.shapes
                        if s.num_gpu == 1 and self.min_filler_milli <= s.gpu_milli < WHOLE})
        ctx.caches["gpupool.waste"] = waste_table(sizes)

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        if "gpupool" not in ctx.caches:
            raise LookupError("policy gpupool needs a target workload (policies.prepare)")
        state = ctx.state
        delta = frag_delta(frag_cache(ctx, "gpupool"), shape, cands)
        if self.stranded_weight:
            per_cpu, per_mib = ctx.caches["gpupool.ratio"]
            nodes = cands.nodes
            total = state.gpu_free[nodes].sum(axis=1)
            cpu, mem = state.cpu_free[nodes], state.mem_free[nodes]

            def stranded(gpu_left, cpu_left, mem_left):
                usable = np.minimum(cpu_left * per_cpu, mem_left * per_mib)
                return np.maximum(0.0, gpu_left - usable)

            after = stranded(total - shape.gpu_milli_total, cpu - shape.cpu_milli,
                             mem - shape.memory_mib)
            delta = delta + self.stranded_weight * (after - stranded(total, cpu, mem))
        if self.waste_weight and cands.gpus is not None:
            waste = ctx.caches["gpupool.waste"]
            free = state.gpu_free[cands.nodes, cands.gpus]
            delta = delta + self.waste_weight * (waste[free - shape.milli] - waste[free])
        return np.floor(-delta / self.bucket_milli)
