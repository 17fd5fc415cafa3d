"""Model-constrained workload variants built from a trace, seeded so anyone can rebuild them.

A share of the GPU pods gets a ``gpu_spec``: a subset of the cluster's accelerator models it may
run on. Pods are chosen per GPU demand (num_gpu x gpu_milli) in the same proportion, so the
constrained pods carry the same share of GPU demand as of pods. Only models whose nodes could
hold the pod are drawn. How (``mix``):

- ``capacity``, ``sqrt``, ``nodes``, ``uniform``: 1 to 3 models drawn without replacement,
  weighted by the cluster's GPU count per model, its square root, its node count, or alike.
  The further down that list, the more constrained demand lands on the rare models.
- ``family``: one model family drawn alike (the models that differ only in a memory suffix,
  e.g. ``V100M16|V100M32``, like the trace's own example).
"""

from __future__ import annotations

from collections import Counter
import re
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from controlplane.scheduler.tracefile import TraceNode, TracePod

MIXES = ("capacity", "sqrt", "nodes", "uniform", "family")
SUBSET_SIZES = (1, 2, 3)
SUBSET_SIZE_P = (0.5, 0.3, 0.2)  # most constrained pods name one model, some a family of two or three


def _pick_per_demand(pods: Sequence[TracePod], share: float, rng: np.random.Generator) -> set[int]:
    """Indices of ``share`` of the GPU pods, the same share of each GPU-demand class."""
    classes: dict[int, list[int]] = {}
    for i, pod in enumerate(pods):
        if pod.gpu_demand:
            classes.setdefault(pod.gpu_demand, []).append(i)
    wanted = {d: share * len(ix) for d, ix in classes.items()}
    counts = {d: int(w) for d, w in wanted.items()}
    total = round(share * sum(len(ix) for ix in classes.values()))
    # largest remainders get the pods left over, ties in demand order (deterministic)
    for d in sorted(wanted, key=lambda d: (-(wanted[d] - counts[d]), d))[:total - sum(counts.values())]:
        counts[d] += 1
    chosen: set[int] = set()
    for d in sorted(classes):
        ix = classes[d]
        chosen.update(ix[k] for k in rng.choice(len(ix), size=counts[d], replace=False))
    return chosen


def _feasible_models(pod: TracePod, nodes: Sequence[TraceNode]) -> list[str]:
    """Models with at least one node that could hold the pod when empty."""
    return sorted({n.model for n in nodes if n.model and n.gpus >= pod.num_gpu
                   and n.cpu_milli >= pod.cpu_milli and n.memory_mib >= pod.memory_mib})


def family(model: str) -> str:
    """A model's family: its name without a trailing memory suffix (V100M32 -> V100)."""
    return re.sub(r"M\d+$", "", model)


def _draw(models: list[str], mass: Counter[str], mix: str, rng: np.random.Generator) -> tuple[str, ...]:
    if mix == "family":
        families = sorted({family(m) for m in models})
        chosen = families[int(rng.integers(len(families)))]
        return tuple(m for m in models if family(m) == chosen)
    weight = np.array([1.0 if mix == "uniform" else mass[m] for m in models], float)
    if mix == "sqrt":
        weight = np.sqrt(weight)
    k = min(int(rng.choice(SUBSET_SIZES, p=SUBSET_SIZE_P)), len(models))
    subset = rng.choice(len(models), size=k, replace=False, p=weight / weight.sum())
    return tuple(sorted(models[j] for j in subset))


def constrain(pods: Sequence[TracePod], nodes: Sequence[TraceNode], share: float, seed: int,
              mix: str = "capacity") -> list[TracePod]:
    """``pods`` with ``share`` (0..1) of the GPU pods restricted to model subsets."""
    if not 0 <= share <= 1:
        raise ValueError(f"share must be between 0 and 1 (got {share})")
    if mix not in MIXES:
        raise ValueError(f"unknown mix '{mix}'; known: {', '.join(MIXES)}")
    rng = np.random.default_rng(seed)
    mass: Counter[str] = Counter()
    for n in nodes:
        mass[n.model] += 1 if mix == "nodes" else n.gpus
    ordered = sorted(pods, key=lambda p: p.name)
    out = list(ordered)
    for i in sorted(_pick_per_demand(ordered, share, rng)):
        pod = ordered[i]
        models = _feasible_models(pod, nodes)
        if not models:
            continue
        out[i] = replace(pod, gpu_spec=_draw(models, mass, mix, rng))
    return out
