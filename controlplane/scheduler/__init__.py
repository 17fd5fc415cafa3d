"""Pure placement engine: ``schedule(snapshot, config) -> Decision`` (no DB, HTTP or clock)."""

from controlplane.scheduler.firstfit import SchedulerConfig, schedule

__all__ = ["SchedulerConfig", "schedule"]
