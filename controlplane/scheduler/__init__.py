"""Pure placement engine: ``schedule(snapshot, config) -> Decision`` (no DB, HTTP or clock)."""

from controlplane.scheduler.engine import SchedulerConfig, schedule

__all__ = ["SchedulerConfig", "schedule"]
