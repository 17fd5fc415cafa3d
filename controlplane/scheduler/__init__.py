"""Pure placement engine: ``schedule(snapshot, config) -> Decision`` (no DB, HTTP or clock)."""

from controlplane.scheduler.config import SchedulerConfig
from controlplane.scheduler.engine import schedule

__all__ = ["SchedulerConfig", "schedule"]
