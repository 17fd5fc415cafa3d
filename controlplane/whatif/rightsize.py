"""Right-sizing in the what-if: a recommended GPU fraction and memory from per-minute use.

The rule is the server's (``controlplane/core/rightsize.py``, used by the job page and the API);
this module summarises a what-if workload's samples into its inputs:

- compute basis: the 95th percentile (nearest rank) over the minutes of the per-minute p95
  utilisation, on the busiest accelerator (every accelerator of a job gets the same slice);
- memory basis: the peak of the per-minute maximum memory used, on any accelerator;
- margin: +20% on compute, +10% on memory (``Margin``);
- steps: compute rounded up to 50 milli (5% of a GPU), at least 50; memory rounded up to
  1 GiB, at least 1 GiB; never more than a whole accelerator (1000 milli, its memory).

Fewer than ``Margin.min_minutes`` minutes of samples is too little to recommend anything.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from controlplane.core import rightsize



class NotEnoughUsage(ValueError):
    """Too few (or no) usage samples to recommend a size."""


@dataclass(frozen=True, slots=True)
class MinuteUsage:
    """One minute of one accelerator: compute utilisation (% of the device) and memory (MiB)."""

    accelerator: str
    compute_mean_pct: float
    compute_p95_pct: float
    memory_mean_mib: float
    memory_max_mib: float


@dataclass(frozen=True, slots=True)
class Margin:
    """Safety margin and rounding steps of a recommendation."""

    compute: float = 0.20  # relative headroom on the p95 compute
    memory: float = 0.10  # relative headroom on the peak memory
    compute_step_milli: int = 50
    memory_step_mib: int = 1024
    min_minutes: int = 10


DEFAULT_MARGIN = Margin()


@dataclass(frozen=True, slots=True)
class UsageBasis:
    """What a job used, per accelerator: the inputs of a recommendation."""

    compute_mean_pct: float
    compute_p95_pct: float
    memory_mean_mib: float
    memory_peak_mib: float
    minutes: int
    accelerators: int = 1

    def scaled(self, factor: float) -> UsageBasis:
        """The same use relative to a device ``factor`` times as large (e.g. a slice of it)."""
        return UsageBasis(self.compute_mean_pct * factor, self.compute_p95_pct * factor,
                          self.memory_mean_mib * factor, self.memory_peak_mib * factor,
                          self.minutes, self.accelerators)


@dataclass(frozen=True, slots=True)
class Recommendation:
    """A slice per accelerator: ``gpu_milli`` of compute and ``gpu_memory_mib`` of memory."""

    gpu_milli: int
    gpu_memory_mib: int
    accelerators: int
    basis: UsageBasis
    margin: Margin

    @property
    def explanation(self) -> str:
        b, m = self.basis, self.margin
        return (f"p95 compute {b.compute_p95_pct:.1f}% + {m.compute:.0%} -> {self.gpu_milli} milli; "
                f"peak memory {b.memory_peak_mib / 1024:.1f} GiB + {m.memory:.0%} -> "
                f"{self.gpu_memory_mib // 1024} GiB (over {b.minutes} min)")


def percentile(values: Sequence[float], q: float) -> float:
    """The server's nearest-rank percentile (core/rightsize.py); no values is NotEnoughUsage."""
    if not values:
        raise NotEnoughUsage("no usage samples")
    return rightsize.percentile(values, q)


def _check(sample: MinuteUsage) -> None:
    for name in ("compute_mean_pct", "compute_p95_pct", "memory_mean_mib", "memory_max_mib"):
        value = getattr(sample, name)
        if not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
            raise ValueError(f"usage sample of {sample.accelerator!r}: {name} must be a number "
                             f">= 0 (got {value!r})")


def basis_of(samples: Iterable[MinuteUsage]) -> UsageBasis:
    """Summarise per-minute samples into the basis of a recommendation (see module doc)."""
    by_acc: dict[str, list[MinuteUsage]] = {}
    for s in samples:
        _check(s)
        by_acc.setdefault(s.accelerator, []).append(s)
    if not by_acc:
        raise NotEnoughUsage("no usage samples")
    p95 = max(percentile([s.compute_p95_pct for s in rows], 95) for rows in by_acc.values())
    mean = max(sum(s.compute_mean_pct for s in rows) / len(rows) for rows in by_acc.values())
    mem_mean = max(sum(s.memory_mean_mib for s in rows) / len(rows) for rows in by_acc.values())
    peak = max(s.memory_max_mib for rows in by_acc.values() for s in rows)
    minutes = min(len(rows) for rows in by_acc.values())
    return UsageBasis(mean, p95, mem_mean, peak, minutes, len(by_acc))


def recommend_basis(basis: UsageBasis, margin: Margin = DEFAULT_MARGIN,
                    accelerator_memory_mib: int | None = None) -> Recommendation:
    """The recommended slice for ``basis``, by the server's rule (core/rightsize.py; raises
    NotEnoughUsage below ``min_minutes``)."""
    if basis.minutes < margin.min_minutes:
        raise NotEnoughUsage(f"{basis.minutes} minute(s) of usage; right-sizing needs at least "
                             f"{margin.min_minutes}")
    rec = rightsize.recommend(basis.compute_p95_pct, basis.memory_peak_mib, accelerator_memory_mib or 0,
                              compute_margin=margin.compute, memory_margin=margin.memory)
    return Recommendation(rec.gpu_milli, rec.gpu_memory_mib, basis.accelerators, basis, margin)


def recommend(samples: Iterable[MinuteUsage], margin: Margin = DEFAULT_MARGIN,
              accelerator_memory_mib: int | None = None) -> Recommendation:
    """Recommend a slice from per-minute samples: ``recommend_basis(basis_of(samples))``."""
    return recommend_basis(basis_of(samples), margin, accelerator_memory_mib)
