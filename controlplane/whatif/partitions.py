"""Static MIG-like partitions: A100/H100 profiles and a fixed layout for every GPU.

Profiles (compute in sevenths, memory in eighths of the card, as on A100/H100):
1g 1/7 + 1/8, 2g 2/7 + 2/8, 3g 3/7 + 4/8, 4g 4/7 + 4/8, 7g the whole GPU. A job gets the
smallest profile whose compute and memory both hold its request.

How GPUs are partitioned: each GPU gets one valid layout for the whole replay — 7g (not
split), 4g+3g, 3g+3g, 2g+2g+2g+1g or 7x1g. The mix of layouts comes from the workload
itself (its instance-seconds per profile, so the best static mix in hindsight): one-GPU 7g
jobs take 7g GPUs, 4g jobs 4g+3g GPUs (their 3g halves serve 3g jobs), the remaining 3g
demand 3g+3g, 2g demand 2g+2g+2g+1g (whose 1g serve 1g jobs), the rest of 1g 7x1g. Jobs of
several GPUs need them together, so their share of GPUs is whole nodes left unsplit (only
nodes with as many GPUs as the largest such job). Walking the nodes in order, each becomes a
whole node or a split one, whichever is further below its share of GPUs; the GPUs of split nodes first take one of every layout the workload needs
(most needed first, so no profile is missing from a small cluster), then the layout furthest
below its share.
"""

from __future__ import annotations

from collections.abc import Sequence

PROFILES = {1: (1, 1), 2: (2, 2), 3: (3, 4), 4: (4, 4), 7: (7, 8)}  # g -> (sevenths, eighths)
LAYOUTS = {"7g": (7,), "4g+3g": (4, 3), "3g+3g": (3, 3), "2g+2g+2g+1g": (2, 2, 2, 1),
           "7x1g": (1,) * 7}
WHOLE_LAYOUT = "7g"
WHOLE_NODES = "whole nodes"  # the share of GPUs for jobs of several GPUs


def profile_for(milli: int, memory_mib: int, card_mib: int) -> int | None:
    """The smallest profile holding ``milli`` compute and ``memory_mib`` (None: none does)."""
    for g, (sevenths, eighths) in PROFILES.items():
        if milli * 7 <= sevenths * 1000 and memory_mib * 8 <= eighths * card_mib:
            return g
    return None


def layout_shares(instance_seconds: dict[int, float],
                  multi_gpu_seconds: float = 0.0) -> dict[str, float]:
    """Share of GPUs per layout (and of whole nodes) for one-GPU jobs' ``{profile:
    instance-seconds}`` and the GPU-seconds of jobs of several GPUs (see module doc)."""
    d = {g: instance_seconds.get(g, 0.0) for g in PROFILES}
    spare_1g = d[2] / 3
    gpus = {WHOLE_NODES: multi_gpu_seconds, "7g": d[7], "4g+3g": d[4], "3g+3g": max(0.0, d[3] - d[4]) / 2,
            "2g+2g+2g+1g": d[2] / 3, "7x1g": max(0.0, d[1] - spare_1g) / 7}
    total = sum(gpus.values())
    if total <= 0:
        return {WHOLE_NODES: 1.0}
    return {name: v / total for name, v in gpus.items() if v > 0}


def _furthest_below(shares: dict[str, float], counts: dict[str, int], total: int) -> str:
    return max(shares, key=lambda name: (shares[name] * total - counts.get(name, 0), shares[name]))


def assign_layouts(gpus_per_node: Sequence[int], shares: dict[str, float],
                   whole_node_gpus: int = 1) -> list[list[str]]:
    """A layout for every GPU of every node, in node order (see module doc); only nodes with
    at least ``whole_node_gpus`` GPUs (the largest multi-GPU job) may be left whole."""
    whole = shares.get(WHOLE_NODES, 0.0)
    split = {k: v / (1 - whole) for k, v in shares.items() if k != WHOLE_NODES and whole < 1}
    kind_counts = {"whole": 0, "split": 0}
    layout_counts: dict[str, int] = {}
    out = []
    for n in gpus_per_node:
        total = kind_counts["whole"] + kind_counts["split"] + n
        kind = _furthest_below({"whole": whole, "split": 1 - whole}, kind_counts, total)
        if n < whole_node_gpus and split:
            kind = "split"
        kind_counts[kind] += n
        if kind == "whole" or not split:
            out.append([WHOLE_LAYOUT] * n)
            continue
        layouts = []
        for _ in range(n):
            unused = [k for k in sorted(split, key=lambda k: -split[k]) if k not in layout_counts]
            name = unused[0] if unused else _furthest_below(split, layout_counts,
                                                           sum(layout_counts.values()) + 1)
            layout_counts[name] = layout_counts.get(name, 0) + 1
            layouts.append(name)
        out.append(layouts)
    return out
