"""Named placement policies: which score plugins, with which weights (chosen in settings)."""

from __future__ import annotations

from collections.abc import Callable

from controlplane.scheduler.frag import FragCache, Workload
from controlplane.scheduler.framework import Context, Profile
from controlplane.scheduler.plugins.packing import GpuPool
from controlplane.scheduler.plugins.scores import FGD, BestFit, BinPack, Spread, Topology

DEFAULT_POLICY = "gpupool"

_PLUGINS: dict[str, Callable[[], object]] = {
    "binpack": BinPack, "spread": Spread, "bestfit": BestFit, "fgd": FGD,
    "topology": Topology, "gpupool": GpuPool,
}

POLICIES: dict[str, dict[str, float]] = {
    "firstfit": {},
    "binpack": {"binpack": 1000, "topology": 1},
    "spread": {"spread": 1000, "topology": 1},
    "bestfit": {"bestfit": 1000},
    "fgd": {"fgd": 1000},
    "gpupool": {"gpupool": 1000, "topology": 1},
}


def profile(name: str, weights: dict[str, float] | None = None) -> Profile:
    """The Profile of policy ``name``, or of explicit plugin ``weights`` when given."""
    if weights is None:
        if name not in POLICIES:
            raise ValueError(f"unknown policy '{name}'; known: {', '.join(sorted(POLICIES))}")
        weights = POLICIES[name]
    unknown = sorted(set(weights) - set(_PLUGINS))
    if unknown:
        raise ValueError(f"unknown score plugin(s) {unknown}; known: {sorted(_PLUGINS)}")
    return Profile(name, [(_PLUGINS[p](), float(w)) for p, w in weights.items()])


def prepare(ctx: Context, prof: Profile, workload: Workload | None) -> None:
    """Build the fragmentation caches the profile's plugins need (one per cycle or run)."""
    names = {plugin.name for plugin, _ in prof.scorers}
    if workload is None:
        workload = Workload([], [])
    if "fgd" in names and "fgd" not in ctx.caches:
        ctx.caches["fgd"] = FragCache(ctx.state, workload)
    if "gpupool" in names and "gpupool" not in ctx.caches:
        for plugin, _ in prof.scorers:
            if plugin.name == "gpupool":
                plugin.prepare(ctx, workload)
