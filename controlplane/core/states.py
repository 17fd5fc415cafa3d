"""Job and node states, and which job transitions are legal."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    PENDING = "pending"
    SCHEDULED = "scheduled"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    LOST = "lost"


FINAL_STATES = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
ACTIVE_STATES = frozenset({JobState.SCHEDULED, JobState.RUNNING})

# lost is transient: the lifecycle requeues (pending) or fails it by the retry policy.
ALLOWED_TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.PENDING: frozenset({JobState.SCHEDULED, JobState.CANCELLED, JobState.FAILED}),
    JobState.SCHEDULED: frozenset(
        {JobState.RUNNING, JobState.PENDING, JobState.SUCCEEDED, JobState.FAILED,
         JobState.CANCELLED, JobState.LOST}
    ),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.LOST, JobState.PENDING}
    ),
    JobState.LOST: frozenset({JobState.PENDING, JobState.FAILED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def can_transition(src: JobState, dst: JobState) -> bool:
    """True when a job may move from ``src`` to ``dst``."""
    return dst in ALLOWED_TRANSITIONS[src]


class NodeState(StrEnum):
    READY = "ready"
    NOT_READY = "not_ready"  # stopped heartbeating
    DRAINING = "draining"


class Role(StrEnum):
    ADMIN = "admin"
    MEMBER = "member"
    AGENT = "agent"
    BOOTSTRAP = "bootstrap"  # may only register nodes
