"""Memory watchdog: flags a slice whose processes stay over its memory limit past a grace period.

Pure logic (no signals, no I/O): the agent feeds it per-(attempt, accelerator) usage and limits
on every tick and stops what it returns. ``scripts/gpu-check-agent.sh`` imports it too.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

Key = tuple[str, str]  # (attempt_id, accelerator_uuid)


@dataclass(frozen=True, slots=True)
class Violation:
    attempt_id: str
    accelerator_uuid: str
    used_mib: float
    limit_mib: float
    over_for_s: float

    @property
    def reason(self) -> str:
        if self.limit_mib == 0:  # an accelerator outside the job's slice
            return (f"memory used outside the slice: {self.used_mib:.0f} MiB on accelerator "
                    f"{self.accelerator_uuid}, which is not part of the job's slice")
        return f"slice memory exceeded: used {self.used_mib:.0f} MiB > limit {self.limit_mib:.0f} MiB"


class MemoryWatchdog:
    """Tracks since when each slice is over its limit; reports it once past ``grace_s``."""

    def __init__(self, grace_s: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        if grace_s < 0:
            raise ValueError(f"watchdog grace must be >= 0 seconds, not {grace_s}")
        self.grace_s = grace_s
        self._clock = clock
        self._over_since: dict[Key, float] = {}
        self._flagged: set[str] = set()

    def check(self, usage: Mapping[Key, float], limits: Mapping[Key, float]) -> list[Violation]:
        """New violations (each attempt at most once until ``forget``)."""
        now = self._clock()
        out: list[Violation] = []
        for key in list(self._over_since):
            if usage.get(key, 0.0) <= limits.get(key, float("inf")):
                del self._over_since[key]
        for key, used in usage.items():
            limit = limits.get(key)
            if limit is None or used <= limit:
                continue
            since = self._over_since.setdefault(key, now)
            attempt, uuid = key
            if now - since >= self.grace_s and attempt not in self._flagged:
                self._flagged.add(attempt)
                out.append(Violation(attempt, uuid, used, limit, now - since))
        return out

    def forget(self, attempt_id: str) -> None:
        """Drop state for a finished attempt."""
        self._flagged.discard(attempt_id)
        for key in [k for k in self._over_since if k[0] == attempt_id]:
            del self._over_since[key]
