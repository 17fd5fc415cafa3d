"""Named placement policies: which score plugins, with which weights (chosen in settings)."""

from __future__ import annotations

from collections.abc import Callable

from controlplane.scheduler.framework import Profile, ScorePlugin
from controlplane.scheduler.plugins.packing import GpuPool
from controlplane.scheduler.plugins.scores import FGD, BestFit, BinPack, Spread, Topology

DEFAULT_POLICY = "gpupool"
PRIMARY_WEIGHT = 1000  # the policy's own scorer, as in the FGD paper's simulator runs
TIE_BREAK_WEIGHT = 1  # topology only decides between spots the primary scores alike

_PLUGINS: dict[str, Callable[[], ScorePlugin]] = {
    "binpack": BinPack, "spread": Spread, "bestfit": BestFit, "fgd": FGD,
    "topology": Topology, "gpupool": GpuPool,
}

POLICIES: dict[str, dict[str, float]] = {
    "firstfit": {},
    "binpack": {"binpack": PRIMARY_WEIGHT, "topology": TIE_BREAK_WEIGHT},
    "spread": {"spread": PRIMARY_WEIGHT, "topology": TIE_BREAK_WEIGHT},
    "bestfit": {"bestfit": PRIMARY_WEIGHT},
    "fgd": {"fgd": PRIMARY_WEIGHT},
    "gpupool": {"gpupool": PRIMARY_WEIGHT, "topology": TIE_BREAK_WEIGHT},
}


def profile(name: str, weights: dict[str, float] | None = None) -> Profile:
    """A fresh Profile of policy ``name``, or of explicit plugin ``weights`` when given."""
    if weights is None:
        if name not in POLICIES:
            raise ValueError(f"unknown policy '{name}'; known: {', '.join(sorted(POLICIES))}")
        weights = POLICIES[name]
    unknown = sorted(set(weights) - set(_PLUGINS))
    if unknown:
        raise ValueError(f"unknown score plugin(s) {unknown}; known: {sorted(_PLUGINS)}")
    return Profile(name, [(_PLUGINS[p](), float(w)) for p, w in weights.items()])
