"""The default policy ``gpupool``: fragmentation gradient made memory-aware, plus packing.

(placeholder: plain FGD while being tuned)
"""

from __future__ import annotations

import numpy as np

from controlplane.scheduler.frag import FragCache, Workload
from controlplane.scheduler.framework import Candidates, Context, MemberShape
from controlplane.scheduler.plugins.scores import frag_cache, frag_delta


class GpuPool:
    name = "gpupool"

    @staticmethod
    def prepare(ctx: Context, workload: Workload) -> None:
        ctx.caches["gpupool"] = FragCache(ctx.state, workload, use_memory=True)

    def score(self, ctx: Context, shape: MemberShape, cands: Candidates) -> np.ndarray:
        delta = frag_delta(frag_cache(ctx, "gpupool"), shape, cands)
        return np.trunc(100.0 / (1.0 + np.exp(delta / 1000.0)))
