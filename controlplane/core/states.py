"""The one job lifecycle: states, legal transitions, stop kinds, reason codes, attempt outcomes.

Every status change goes through ``controlplane.services.lifecycle.transition``, which checks
``ALLOWED_TRANSITIONS``; what a finished attempt means for its job is decided by the pure
``outcome`` below. CLI, templates and metrics import these enums instead of spelling strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"  # placed; start orders handed to the agents
    RUNNING = "running"  # a member reported its process started
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.SCHEDULED, JobState.RUNNING})
UNFINISHED_STATES = ACTIVE_STATES | {JobState.PENDING}

ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.SCHEDULED, JobState.CANCELLED}),
    # an attempt that ends before it ran: requeued (pending) or final
    JobState.SCHEDULED: frozenset({JobState.RUNNING, JobState.PENDING, JobState.SUCCEEDED,
                                   JobState.FAILED, JobState.CANCELLED}),
    JobState.RUNNING: frozenset({JobState.PENDING, JobState.SUCCEEDED, JobState.FAILED,
                                 JobState.CANCELLED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(src: JobState, dst: JobState) -> bool:
    """True when a job may move from ``src`` to ``dst``."""
    return dst in ALLOWED_TRANSITIONS[src]


class MemberState(StrEnum):
    """One gang member (rank) of an attempt on one node."""

    ASSIGNED = "assigned"  # start order waiting for (or handed to) the agent
    RUNNING = "running"
    EXITED = "exited"  # process gone: its slices are released


LIVE_MEMBER_STATES = (MemberState.ASSIGNED, MemberState.RUNNING)


class ProcessState(StrEnum):
    """A job member's process as its node agent records it (agent state survives restarts)."""

    RUNNING = "running"
    EXITED = "exited"  # the process is gone; its final report waits for its logs to ship
    DONE = "done"  # the final report is queued; only retention is left


class StopKind(StrEnum):
    """Why an attempt is being stopped (the first reason wins, except that a cancel always wins)."""

    CANCEL = "cancel"
    PREEMPT = "preempt"
    LOST = "lost"  # a member's node stopped heartbeating
    FAILURE = "failure"  # a member failed: the rest of the gang is stopped
    TIMEOUT = "timeout"  # it ran longer than its max_runtime_s


class PendingCode(StrEnum):
    """Why a job waits (PendingReason.code)."""

    QUOTA = "quota"
    CAPACITY = "capacity"
    CONSTRAINTS = "constraints"
    GANG = "gang"
    PRIORITY = "priority"
    RESERVATION = "reservation"
    CORDONED = "cordoned"
    INVALID = "invalid"
    REQUEUE_HOLD = "requeue_hold"  # requeued from a lost node: waits for the old copy to stop


class OutcomeCode(StrEnum):
    """What a finished attempt meant for its job (stored as the job's reason_code)."""

    SUCCEEDED = "succeeded"
    EXIT_NONZERO = "exit_nonzero"
    CANCELLED = "cancelled"
    PREEMPTED = "preempted"  # requeued, or failed when retry.on_preemption is false
    LOST = "lost"  # requeued, or failed when out of attempts or retry.on_lost is false
    FAILURE_RETRIED = "failure_retried"
    TIMED_OUT = "timed_out"  # stopped past its max_runtime_s


class NodeState(StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"  # stopped heartbeating
    DRAINING = "draining"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    AGENT = "agent"
    BOOTSTRAP = "bootstrap"  # may only register nodes


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """The spec's ``retry`` block, as the lifecycle reads it."""

    max_attempts: int = 3
    on_lost: bool = True
    on_failure: bool = False
    on_preemption: bool = True

    @classmethod
    def from_spec(cls, retry: dict | None) -> RetryPolicy:
        r = retry or {}
        return cls(max_attempts=int(r.get("max_attempts", 3)), on_lost=bool(r.get("on_lost", True)),
                    on_failure=bool(r.get("on_failure", False)),
                    on_preemption=bool(r.get("on_preemption", True)))


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a job goes when its attempt has ended, and why (a sentence for people)."""

    state: JobState  # PENDING (requeued) or a final state
    code: OutcomeCode
    reason: str
    exit_code: int | None = None


def outcome(stop_kind: StopKind | None, stop_reason: str | None, exit_codes: list[int | None],
            first_failure_code: int | None, retry: RetryPolicy, attempt: int) -> Outcome:
    """Decide a finished attempt's result from why it stopped, its members' exit codes, the
    retry policy and how many attempts the job has had (``attempt`` counts this one)."""
    reason = stop_reason or ""
    retries_left = attempt < retry.max_attempts
    if stop_kind == StopKind.CANCEL:
        return Outcome(JobState.CANCELLED, OutcomeCode.CANCELLED, reason or "cancelled")
    if stop_kind == StopKind.PREEMPT:
        if retry.on_preemption:
            return Outcome(JobState.PENDING, OutcomeCode.PREEMPTED, f"preempted: {reason}")
        return Outcome(JobState.FAILED, OutcomeCode.PREEMPTED,
                       f"preempted and retry.on_preemption is false: {reason}")
    if stop_kind == StopKind.TIMEOUT:
        return Outcome(JobState.FAILED, OutcomeCode.TIMED_OUT, reason or "ran longer than its max_runtime_s")
    if stop_kind == StopKind.LOST:
        if retry.on_lost and retries_left:
            return Outcome(JobState.PENDING, OutcomeCode.LOST, f"lost: {reason}")
        return Outcome(JobState.FAILED, OutcomeCode.LOST, f"lost after {attempt} attempt(s): {reason}")
    nonzero = [c for c in exit_codes if c not in (0, None)]
    if stop_kind == StopKind.FAILURE or nonzero:
        code = first_failure_code if first_failure_code is not None else next(iter(nonzero), None)
        why = reason or f"exited with code {code}"
        if retry.on_failure and retries_left:
            return Outcome(JobState.PENDING, OutcomeCode.FAILURE_RETRIED, f"failed: {why}")
        return Outcome(JobState.FAILED, OutcomeCode.EXIT_NONZERO, why, exit_code=code)
    return Outcome(JobState.SUCCEEDED, OutcomeCode.SUCCEEDED, "all ranks exited 0", exit_code=0)
