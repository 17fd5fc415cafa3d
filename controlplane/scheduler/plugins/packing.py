"""The default policy ``gpupool``: fragmentation gradient made memory-aware, plus packing.

(being tuned)
"""

from __future__ import annotations

import os

import numpy as np

from controlplane.scheduler.frag import FragCache, Workload
from controlplane.scheduler.framework import Candidates, Context, MemberShape
from controlplane.scheduler.plugins.scores import frag_cache, frag_delta

EXP = os.environ.get("GPUPOOL_EXP", "A")
W = float(os.environ.get("GPUPOOL_W", "0"))
RW = float(os.environ.get("GPUPOOL_RW", "1"))
LAM = float(os.environ.get("GPUPOOL_LAM", "0"))


def waste_table(sizes: list[int]) -> np.ndarray:
    """waste[r]: milli of a residue r that no combination of ``sizes`` can fill."""
    best = np.zeros(1001, np.int64)  # best[r] = largest sum <= r
    for r in range(1, 1001):
        b = best[r - 1]
        for g in sizes:
            if g <= r:
                b = max(b, g + best[r - g])
        best[r] = b
    return np.arange(1001) - best


class GpuPool:
    name = "gpupool"

    @staticmethod
    def prepare(ctx: Context, workload: Workload) -> None:
        cache = FragCache(ctx.state, workload, use_memory="M" in EXP)
        ctx.caches["gpupool"] = cache
        sizes = sorted({s.gpu_milli for s in workload.shapes if s.num_gpu == 1 and s.gpu_milli < 1000})
        ctx.caches["gpupool.waste"] = waste_table(sizes)
        gpu = [s for s in workload.shapes if s.num_gpu]
        gp = sum(p * s.num_gpu * s.gpu_milli for s, p in zip(workload.shapes, workload.weights))
        cp = sum(p * s.cpu_milli for s, p in zip(workload.shapes, workload.weights))
        mp = sum(p * s.memory_mib for s, p in zip(workload.shapes, workload.weights))
        ctx.caches["gpupool.ratio"] = (gp / max(cp, 1), gp / max(mp, 1))
        ctx.caches["gpupool.min"] = (min([s.cpu_milli for s in gpu] or [0]),
                                     min([s.memory_mib for s in gpu] or [0]))

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        state = ctx.state
        delta = frag_delta(frag_cache(ctx, "gpupool"), shape, cands)
        if "S" in EXP:
            min_cpu, min_mem = ctx.caches["gpupool.min"]
            nodes = cands.nodes
            total = state.gpu_free[nodes].sum(axis=1)
            before = (state.cpu_free[nodes] < min_cpu) | (state.mem_free[nodes] < min_mem)
            after = ((state.cpu_free[nodes] - shape.cpu_milli < min_cpu)
                     | (state.mem_free[nodes] - shape.memory_mib < min_mem))
            delta = delta + after * (total - shape.gpu_milli_total) - before * total
        if "R" in EXP:
            rc, rm = ctx.caches["gpupool.ratio"]
            nodes = cands.nodes
            total = state.gpu_free[nodes].sum(axis=1)
            cpu, mem = state.cpu_free[nodes], state.mem_free[nodes]
            def stranded(t, c, m):
                return np.maximum(0, t - np.minimum(c * rc, m * rm))
            delta = delta + RW * (stranded(total - shape.gpu_milli_total, cpu - shape.cpu_milli,
                                      mem - shape.memory_mib) - stranded(total, cpu, mem))
        if LAM and cands.gpus is not None:
            waste = ctx.caches["gpupool.waste"]
            f = state.gpu_free[cands.nodes, cands.gpus]
            delta = delta + LAM * (waste[f - shape.milli] - waste[f])
        if W:
            base = np.floor(-delta / W)
        else:
            base = np.trunc(100.0 / (1.0 + np.exp(delta / 1000.0)))
        if "B" in EXP:
            base = base - delta * 1e-6
        if "C" in EXP:
            left = state.gpu_free[cands.nodes].sum(axis=1)
            base = base - left * 1e-7
        if "D" in EXP and cands.gpus is not None:
            left = state.gpu_free[cands.nodes, cands.gpus] - shape.milli
            base = base - left * 1e-7
        return base
