"""Jobs and their audit events as the API answers them (the spec a user submits is
``workloads.specs``; its JSON schema documents ``POST /api/v1/jobs``)."""

from __future__ import annotations

from typing import Any

from controlplane.core.states import JobState, OutcomeCode
from controlplane.schemas.base import ApiModel, Timestamp


class JobRequest(ApiModel):
    """What each member of the job asked for (from its spec's ``resources``)."""

    gpu: float
    gpu_memory_mib: int
    cpu_milli: int
    memory_mib: int
    nodes: int


class PendingReason(ApiModel):
    """Why the scheduler left the job pending."""

    code: str
    message: str
    details: dict[str, Any] = {}
    unschedulable: bool = False


class PlacedSlice(ApiModel):
    accelerator_uuid: str
    compute_milli: int
    memory_mib: int


class PlacementMember(ApiModel):
    """One gang member of the latest attempt: its node and its slices."""

    rank: int
    node: str
    cpu_milli: int | None = None
    memory_mib: int | None = None
    slices: list[PlacedSlice] = []


class Job(ApiModel):
    id: str
    name: str
    kind: str
    team: str
    queue: str
    user: str | None
    status: JobState
    priority: int
    spec: dict[str, Any] | None = None  # null in list pages unless ?include=spec
    request: JobRequest
    pending_reason: PendingReason | None = None
    attempt: int
    max_attempts: int
    exit_code: int | None = None
    endpoint: str | None = None
    progress: dict[str, Any] | None = None
    placement: list[PlacementMember] = []
    created_at: Timestamp
    started_at: Timestamp | None = None
    finished_at: Timestamp | None = None
    status_reason: str | None = None
    reason_code: OutcomeCode | None = None  # what the last attempt's outcome was


class JobPage(ApiModel):
    """Jobs newest first; pass ``next_cursor`` back as ``cursor`` for the next page."""

    items: list[Job]
    next_cursor: str | None = None


class Event(ApiModel):
    """One audit record: a status change or an admin action."""

    id: str
    ts: Timestamp
    kind: str
    object_type: str
    object_id: str
    actor: str
    reason: str | None = None
    data: dict[str, Any] = {}


class EventList(ApiModel):
    items: list[Event]


class EventPage(ApiModel):
    items: list[Event]
    next_cursor: str | None = None
