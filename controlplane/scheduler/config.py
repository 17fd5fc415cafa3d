"""Scheduler settings: the placement policy by name (or explicit plugin weights) and actions."""

from __future__ import annotations

from dataclasses import dataclass

from controlplane.scheduler import policies
from controlplane.scheduler.frag import TaskShape


@dataclass(frozen=True)
class SchedulerConfig:
    """How a cycle decides. ``workload``: the fragmentation target shapes (empty: the shapes of
    the pool's own pending and running jobs)."""

    policy: str = policies.DEFAULT_POLICY
    weights: dict[str, float] | None = None  # plugin name -> weight; overrides the policy's
    preemption: bool = True
    backfill: bool = True  # False: a blocked queue head holds back the rest of its queue
    max_reservations: int = 4
    max_preemption_attempts: int = 32
    workload: tuple[TaskShape, ...] = ()
