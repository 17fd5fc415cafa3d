"""Right-sizing: the GPU fraction and memory a job should ask for, from its observed use.

The rule (docs/usage.md; the same numbers as ``controlplane/whatif/rightsize.py`` of the what-if
work, so either can become the single implementation):

- basis: per accelerator, the 95th percentile (nearest rank, weighted by minutes) of the
  per-minute p95 utilisation, and the largest of those over the job's accelerators; peak memory
  is the largest per-minute maximum on any accelerator; at least ``MIN_MINUTES`` minutes;
- compute: p95 % of the accelerator x (1 + 20 %), rounded up to 50 milli (5 % of a GPU), at least
  50 and at most 1000 milli;
- memory: peak MiB x (1 + 10 %), rounded up to 1 GiB, at least 1 GiB, at most the accelerator's.

Pure (no I/O): the job page, the API and ``gpupool submit --like`` all call it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WHOLE_MILLI = 1000
COMPUTE_MARGIN = 0.20
MEMORY_MARGIN = 0.10
COMPUTE_STEP_MILLI = 50
MEMORY_STEP_MIB = 1024
MIN_MINUTES = 10


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A slice of one accelerator: ``gpu_milli`` of compute (None: no utilisation was measured,
    keep the request) and ``gpu_memory_mib`` of memory."""

    gpu_milli: int | None
    gpu_memory_mib: int


@dataclass(frozen=True, slots=True)
class UsageBasis:
    """What a job used: the inputs of a recommendation."""

    util_p95_pct: float | None
    memory_peak_mib: float
    minutes: float


@dataclass(frozen=True, slots=True)
class BucketUse:
    """One stored usage bucket of one accelerator (``minutes`` long)."""

    accelerator: str
    minutes: float
    util_p95_pct: float | None
    memory_max_mib: float


def percentile(values: Sequence[float], q: float, weights: Sequence[float] | None = None) -> float:
    """Nearest-rank percentile: the smallest value with at least ``q`` % of the (weighted) values
    at or below it. Raises ValueError on no values."""
    if not values:
        raise ValueError("percentile of no values")
    if weights is None:
        ordered = sorted(values)
        return ordered[max(0, math.ceil(round(q / 100 * len(ordered), 9)) - 1)]
    pairs = sorted(zip(values, weights))
    total = sum(w for _, w in pairs)
    need = q / 100.0 * total
    seen = 0.0
    for value, weight in pairs:
        seen += weight
        if seen >= need - 1e-9:
            return value
    return pairs[-1][0]


def basis_of(buckets: Iterable[BucketUse]) -> UsageBasis:
    """Summarise stored buckets (see the module doc); minutes count the least-covered accelerator."""
    by_acc: dict[str, list[BucketUse]] = {}
    for b in buckets:
        by_acc.setdefault(b.accelerator, []).append(b)
    if not by_acc:
        return UsageBasis(None, 0.0, 0.0)
    p95s = []
    for rows in by_acc.values():
        known = [b for b in rows if b.util_p95_pct is not None]
        if known:
            p95s.append(percentile([b.util_p95_pct for b in known], 95, [b.minutes for b in known]))
    peak = max(b.memory_max_mib for rows in by_acc.values() for b in rows)
    minutes = min(sum(b.minutes for b in rows) for rows in by_acc.values())
    return UsageBasis(max(p95s) if p95s else None, peak, minutes)


def _round_up(value: float, step: int) -> int:
    return step * math.ceil(round(value / step, 6))


def recommend(util_p95_pct: float | None, memory_peak_mib: float, device_memory_mib: int, *,
              compute_margin: float = COMPUTE_MARGIN,
              memory_margin: float = MEMORY_MARGIN) -> Recommendation:
    """The slice to ask for, given p95 utilisation (% of the accelerator), peak memory (MiB) and
    the accelerator's memory (MiB)."""
    milli = None
    if util_p95_pct is not None:
        milli = _round_up(max(0.0, util_p95_pct) * 10 * (1 + compute_margin), COMPUTE_STEP_MILLI)
        milli = min(WHOLE_MILLI, max(COMPUTE_STEP_MILLI, milli))
    memory = max(MEMORY_STEP_MIB, _round_up(max(0.0, memory_peak_mib) * (1 + memory_margin), MEMORY_STEP_MIB))
    if device_memory_mib > 0:
        memory = min(memory, device_memory_mib)
    return Recommendation(milli, memory)
