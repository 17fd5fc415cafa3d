"""Background loops in server threads: scheduling (only the lease holder) and node liveness."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

from controlplane.core.snapshot import Decision, PendingReason
from controlplane.db.database import Database
from controlplane.loops import lease, liveness, retention
from controlplane.services.scheduling import SchedulingService
from controlplane.settings import Settings

log = logging.getLogger("gpupool.loops")
LEASE = "scheduler"


def _schedule_fn(policy: str | None):  # noqa: ANN202
    """The pure scheduler and its config; an unknown policy is a ValueError naming the known ones."""
    from controlplane import scheduler

    config_cls = getattr(scheduler, "SchedulerConfig", None)
    if config_cls is None:
        return scheduler.schedule, None
    config = config_cls(policy=policy) if policy else config_cls()
    try:
        from controlplane.scheduler import policies
    except ImportError:
        return scheduler.schedule, config
    if hasattr(policies, "profile"):
        try:
            policies.profile(config.policy, getattr(config, "weights", None))
        except ValueError as err:
            raise ValueError(f"GPUPOOL_SCHEDULER_POLICY: {err}") from None
    return scheduler.schedule, config


class Loops:
    """Runs one cycle every ``scheduler_interval_s`` while holding the lease; sweeps liveness."""

    def __init__(self, db: Database, settings: Settings):
        self.db = db
        self.settings = settings
        self.holder = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.service = SchedulingService(db, port_range=(settings.master_port_min,
                                                         settings.master_port_max))
        self._schedule, self._config = _schedule_fn(settings.scheduler_policy)  # fails fast
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.is_leader = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-loops", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        if self.is_leader:
            try:
                lease.release(self.db, LEASE, self.holder)
            except Exception:  # noqa: BLE001
                pass

    def kick(self) -> None:
        """Run the next cycle now (e.g. after a submit)."""
        self._wake.set()

    def _run(self) -> None:
        schedule, config = self._schedule, self._config
        next_sweep = next_trim = 0.0
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self.is_leader = lease.try_acquire(self.db, LEASE, self.holder,
                                                   self.settings.scheduler_lease_s)
                if self.is_leader:
                    if started >= next_sweep:
                        liveness.sweep(self.db, self.settings.heartbeat_timeout_s)
                        liveness.lost_node_leftovers(self.db)
                        next_sweep = started + self.settings.liveness_interval_s
                    if started >= next_trim:
                        retention.trim_status_seen(self.db)
                        next_trim = started + 300.0
                    self.cycle(schedule, config)
            except Exception:  # noqa: BLE001 - a bad cycle must not kill the loop
                log.exception("scheduling cycle failed; retrying next interval")
            self._wake.wait(max(0.0, self.settings.scheduler_interval_s - (time.monotonic() - started)))
            self._wake.clear()

    def cycle(self, schedule=None, config=None) -> dict:  # noqa: ANN001
        if schedule is None:
            schedule, config = self._schedule, self._config
        if not self.service.has_work():
            self.cycles += 1
            return {"placed": 0, "skipped": 0, "preempted": 0, "pending": 0}
        snap = self.service.snapshot(time.time())
        if snap.nodes:
            decision = schedule(snap, config)
        else:  # nothing to place on: say so instead of asking the policy engine
            decision = Decision(pending={j.job_id: PendingReason(
                "capacity", "no nodes are registered yet; start a gpupool agent") for j in snap.pending})
        placed = {p.job_id for p in decision.placements}
        for job in snap.pending:  # every pending job says why, even if the policy did not
            if job.job_id not in placed and job.job_id not in decision.pending:
                decision.pending[job.job_id] = PendingReason(
                    "capacity", "not placed in the last scheduling cycle; waiting for capacity")
        decision.pending.update(self.service.invalid_reasons())
        result = self.service.apply(decision, actor=f"scheduler:{self.holder}")
        self.cycles += 1
        return result
