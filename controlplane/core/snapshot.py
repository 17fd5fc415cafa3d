"""The scheduler's input (Snapshot) and output (Decision): plain values, no I/O.

The scheduling loop builds a Snapshot from the database, calls the pure
``controlplane.scheduler.schedule(snapshot, config)`` and applies the Decision in one
transaction that re-checks capacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from controlplane.core.resources import Node, Request, SliceGrant
from controlplane.core.states import PendingCode


@dataclass(frozen=True, slots=True)
class Queue:
    """A team's queue: guaranteed quota, hard limit and fair-share weight (compute milli), per
    model guarantees, and GPU-memory guarantee and limit (MiB; None: none)."""

    name: str
    team: str
    guarantee_milli: int = 0
    limit_milli: int | None = None  # None: no limit beyond the pool
    weight: float = 1.0
    model_guarantees_milli: tuple[tuple[str, int], ...] = ()  # (model, milli)
    memory_guarantee_mib: int | None = None  # GPU memory guaranteed (MiB); None: none
    memory_limit_mib: int | None = None  # GPU memory the queue may hold (MiB); None: no limit


@dataclass(frozen=True, slots=True)
class PendingJob:
    job_id: str
    queue: str
    request: Request
    priority: int = 0  # higher runs first within a queue
    submitted_seq: int = 0  # submission order (older first on ties)
    preemptible: bool = True
    max_runtime_s: float | None = None  # declared run-time limit; None: runs until it ends


@dataclass(frozen=True, slots=True)
class MemberPlacement:
    """Where one gang member (rank) runs: a node, its slices and its CPU/memory."""

    rank: int
    node: str
    slices: tuple[SliceGrant, ...]
    cpu_milli: int = 0
    memory_mib: int = 0


@dataclass(frozen=True, slots=True)
class RunningJob:
    job_id: str
    queue: str
    request: Request
    members: tuple[MemberPlacement, ...]
    priority: int = 0
    started_at: float = 0.0  # seconds on the snapshot's clock
    min_runtime_s: float = 0.0
    preemptible: bool = True
    max_runtime_s: float | None = None  # declared run-time limit; None: no expected end

    @property
    def expected_end(self) -> float | None:
        """When it will have ended at the latest (snapshot clock), if it declared a limit."""
        return None if self.max_runtime_s is None else self.started_at + self.max_runtime_s


@dataclass(slots=True)
class Snapshot:
    """Everything the scheduler may look at. Allocations on nodes include running jobs."""

    nodes: list[Node]
    queues: list[Queue] = field(default_factory=list)
    pending: list[PendingJob] = field(default_factory=list)
    running: list[RunningJob] = field(default_factory=list)
    now: float = 0.0


@dataclass(frozen=True, slots=True)
class Placement:
    """Run ``job_id`` with these members. ``preempts``: jobs that must be stopped (and their
    slices freed) first, because this placement uses their room; they are also listed in
    ``Decision.preemptions`` with ``for_job_id == job_id``."""

    job_id: str
    members: tuple[MemberPlacement, ...]
    preempts: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Preemption:
    job_id: str
    reason: str  # a sentence for people, e.g. "reclaimed by team-a for job 42"
    for_job_id: str | None = None


@dataclass(frozen=True, slots=True)
class PendingReason:
    """Why a job stays pending, structured and readable: the scheduler's one result type for
    a job it did not place. ``unschedulable``: it can never fit the pool as built (else it
    waits for room); ``details`` holds the numbers, JSON-safe, including ``expected_start``
    (snapshot clock) when the job holds a reservation with a known start."""

    code: PendingCode
    message: str
    details: dict = field(default_factory=dict)
    unschedulable: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "code", PendingCode(self.code))  # a plain string is checked

    @property
    def expected_start(self) -> float | None:
        return self.details.get("expected_start")

    def with_note(self, note: str, **details) -> PendingReason:  # noqa: ANN003
        """The same reason with ``; note`` appended and ``details`` added."""
        return replace(self, message=f"{self.message}; {note}", details=self.details | details)


@dataclass(slots=True)
class Decision:
    """What the scheduler decided for one cycle.

    - ``placements``: jobs to start now, with every member's node and slices. Apply the
      preemptions a placement names in ``preempts`` before it, in the same transaction.
    - ``preemptions``: running jobs to stop and requeue; ``reason`` is a sentence for people.
    - ``pending``: a reason for every pending job not placed (``unschedulable``: never fits).
    """

    placements: list[Placement] = field(default_factory=list)
    preemptions: list[Preemption] = field(default_factory=list)
    pending: dict[str, PendingReason] = field(default_factory=dict)
