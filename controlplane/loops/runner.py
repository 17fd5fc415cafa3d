"""Background loops in one server thread: scheduling and liveness (only the lease holder),
retention, and the per-minute usage history (every replica; one row per minute is kept)."""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from sqlalchemy.exc import DBAPIError

from controlplane.core.snapshot import Decision, PendingReason
from controlplane.core.states import PendingCode
from controlplane.db.database import Database
from controlplane.history import sample as sample_history
from controlplane.loops import lease, liveness, retention, runtime_limits, usage_retention
from controlplane.scheduler import SchedulerConfig, schedule
from controlplane.scheduler.dump import dump_snapshot
from controlplane.scheduler.policies import profile
from controlplane.services import scheduler_settings, usage_buffer
from controlplane.services.scheduling import SchedulingService
from controlplane.settings import Settings

log = logging.getLogger("gpupool.loops")
LEASE = "scheduler"
KICK_GAP_S = 0.02  # shortest time between the starts of two kicked cycles
TRIM_EVERY_S = 300.0
KEEP_DUMPS = 20  # dumps of failed cycles kept under $GPUPOOL_HOME/dumps  # status-seq retention: cheap, and replays older than minutes are harmless
# observer(seconds, placed, preempted, pending) of each cycle, e.g. the metrics
CycleObserver = Callable[[float, int, int, int], None]


def write_dump(directory: Path, dump: dict, keep: int = KEEP_DUMPS) -> Path:
    """Write a scheduler dump as JSON into ``directory`` (keeping the newest ``keep`` dumps)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"cycle-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}.json"
    path.write_text(json.dumps(dump))
    for old in sorted(directory.glob("cycle-*.json"))[:-keep]:
        old.unlink(missing_ok=True)
    return path


def dump_cycle(db: Database, settings: Settings) -> dict:
    """What the scheduler would decide now, with its input, as a dump an admin can replay
    offline (``gpupool bench replay``); nothing is applied."""
    config = scheduler_config(settings)
    found = scheduler_settings.stored(db)
    if found is not None:
        try:
            profile(found.policy, found.weights)
            config = replace(config, policy=found.policy, weights=found.weights)
        except ValueError:
            pass  # the loop ignores it too
    snap = SchedulingService(db, port_range=(settings.master_port_min, settings.master_port_max)).snapshot(time.time())
    decision = schedule(snap, config) if snap.nodes else Decision()
    return dump_snapshot(snap, config, decision)


def scheduler_config(settings: Settings) -> SchedulerConfig:
    """The scheduler's config from settings; an unknown policy is a ValueError naming the known ones."""
    config = SchedulerConfig(policy=settings.scheduler_policy) if settings.scheduler_policy else SchedulerConfig()
    try:
        profile(config.policy, config.weights)
    except ValueError as err:
        raise ValueError(f"GPUPOOL_SCHEDULER_POLICY: {err}") from None
    return config


class Loops:
    """Runs one cycle every ``scheduler_interval_s`` (sooner when kicked) while holding the lease."""

    def __init__(self, db: Database, settings: Settings, *, observer: CycleObserver | None = None):
        self.db = db
        self.settings = settings
        self.holder = settings.replica_id or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self.service = SchedulingService(db, port_range=(settings.master_port_min,
                                                         settings.master_port_max))
        self.base_config = self.config = scheduler_config(settings)  # fails fast on a bad policy
        self._stored_at: float | None = None  # updated_at of the admin's settings in use
        self.observer = observer
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self.cycles = 0
        self.is_leader = False
        self.backlog = 0  # jobs the last cycle left pending

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="gpupool-loops", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=10)
        try:  # the open usage bucket too: another replica's part of it merges
            usage_buffer.flush(self.db, time.time(), self.settings.usage_bucket_s, final=True)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            log.warning("could not write the last usage samples at shutdown", exc_info=True)
        if self.is_leader:
            try:
                lease.release(self.db, LEASE, self.holder)
            except Exception:  # noqa: BLE001 - the lease expires by itself anyway
                pass

    def kick(self) -> None:
        """Run the next cycle now (a job was submitted) when the last cycle left nothing pending:
        an idle pool places a job at once, while a backlog is worked through on the regular
        interval, so a stream of submits cannot keep the leader cycling."""
        if self.backlog == 0:
            self._wake.set()

    def _run(self) -> None:
        next_sweep = next_trim = next_history = next_limits = 0.0
        database_failed = False
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                if started >= next_history:
                    sample_history(self.db, time.time(), retention_s=self.settings.history_retention_s,
                                   bucket_s=min(self.settings.history_interval_s, 60.0))
                    next_history = started + self.settings.history_interval_s
            except Exception:  # noqa: BLE001 - a failed sample must not stop scheduling
                log.exception("usage history sample failed; retrying next interval")
            try:
                usage_buffer.flush(self.db, time.time(), self.settings.usage_bucket_s)
            except Exception:  # noqa: BLE001 - kept in memory (bounded) for the next try
                log.exception("writing per-job usage failed; retrying next iteration")
            try:
                was_leader = self.is_leader
                self.is_leader = lease.try_acquire(self.db, LEASE, self.holder,
                                                   self.settings.scheduler_lease_s)
                if self.is_leader and (database_failed or not was_leader):
                    # a new leader, or the database is back: give every agent one full heartbeat
                    # timeout to be heard before any node is declared lost
                    next_sweep = max(next_sweep, started + self.settings.heartbeat_timeout_s)
                database_failed = False
                if self.is_leader:
                    if started >= next_sweep:
                        liveness.sweep(self.db, self.settings.heartbeat_timeout_s)
                        liveness.lost_node_leftovers(self.db)
                        next_sweep = started + self.settings.liveness_interval_s
                    if started >= next_limits:  # not held back by the sweep's grace
                        runtime_limits.stop_overdue(self.db)
                        next_limits = started + self.settings.liveness_interval_s
                    if started >= next_trim:
                        retention.trim_status_seen(self.db)
                        retention.trim_logs(self.db, self.settings.log_retention_s)
                        retention.trim_events(self.db, self.settings.event_retention_s)
                        usage_retention.roll_up(self.db, time.time())
                        usage_retention.trim_minutes(self.db, time.time(), self.settings.usage_minute_retention_s)
                        usage_retention.trim(self.db, time.time(), self.settings.usage_retention_s)
                        next_trim = started + TRIM_EVERY_S
                    self.cycle()
            except DBAPIError:  # the database is unreachable or failing: no sweep until it is back
                database_failed = True
                log.exception("database error in the scheduling loop; retrying next interval")
            except Exception:  # noqa: BLE001 - a bad cycle must not kill the loop
                log.exception("scheduling cycle failed; retrying next interval")
            elapsed = time.monotonic() - started
            if self._wake.wait(max(0.0, self.settings.scheduler_interval_s - elapsed)):
                # kicked: run again soon, but leave the database at least as long idle as the
                # last cycle took, so a stream of submits cannot keep the leader cycling flat out
                self._stop.wait(max(0.0, started + max(KICK_GAP_S, 2 * elapsed) - time.monotonic()))
            self._wake.clear()

    def cycle(self) -> dict:
        """One scheduling cycle: snapshot, schedule, apply; reported to the observer."""
        started = time.perf_counter()
        result = self._cycle()
        self.backlog = result["pending"]
        if self.observer is not None:
            self.observer(time.perf_counter() - started, result["placed"], result["preempted"],
                          result["pending"])
        return result

    def refresh_config(self) -> None:
        """Use the policy and weights an admin stored (one primary-key read per cycle); without
        them, the server's settings. A stored policy this version does not know is logged and ignored."""
        found = scheduler_settings.stored(self.db)
        if found is None:
            self.config, self._stored_at = self.base_config, None
            return
        if found.updated_at == self._stored_at:
            return
        try:
            profile(found.policy, found.weights)
        except ValueError as err:
            log.error("stored scheduler settings ignored (%s); using %s", err, self.base_config.policy)
            self.config = self.base_config
        else:
            self.config = replace(self.base_config, policy=found.policy, weights=found.weights)
            log.info("scheduler policy %s%s (set at run time)", found.policy,
                     f" with weights {found.weights}" if found.weights is not None else "")
        self._stored_at = found.updated_at

    def _cycle(self) -> dict:
        self.cycles += 1
        if not self.service.has_work():
            return {"placed": 0, "skipped": 0, "preempted": 0, "pending": 0}
        self.refresh_config()
        snap = self.service.snapshot(time.time())
        if snap.nodes:
            try:
                decision = schedule(snap, self.config)
            except Exception:
                path = write_dump(self.settings.home / "dumps", dump_snapshot(snap, self.config))
                log.error("the scheduler failed on this cycle; its input is in %s "
                          "(replay it with `gpupool bench replay %s`)", path, path)
                raise
        else:  # nothing to place on: say so instead of asking the policy engine
            decision = Decision(pending={j.job_id: PendingReason(
                PendingCode.CAPACITY.value, "no nodes are registered yet; start a gpupool agent")
                for j in snap.pending})
        placed = {p.job_id for p in decision.placements}
        for job in snap.pending:  # every pending job says why, even if the policy did not
            if job.job_id not in placed and job.job_id not in decision.pending:
                decision.pending[job.job_id] = PendingReason(
                    PendingCode.CAPACITY.value, "not placed in the last scheduling cycle; waiting for capacity")
        decision.pending.update(self.service.invalid_reasons())
        return self.service.apply(decision, actor=f"scheduler:{self.holder}")
