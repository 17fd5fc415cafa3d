"""SQLAlchemy 2 typed tables (*Row). Times are float epoch seconds; JSON columns hold specs etc.

Capacity rule: live slices on one accelerator never exceed 1000 milli or its memory. The
database keeps it: triggers (migration 0003) add each live slice to its accelerator's counters
and subtract it when released, in the same transaction, and CHECK constraints on those counters
reject any over-commit.
"""

from __future__ import annotations

from sqlalchemy import (BigInteger, Boolean, CheckConstraint, Float, ForeignKey, Index, Integer,
                        String, Text, UniqueConstraint, false, text, true)
from sqlalchemy.orm import Mapped, mapped_column

from controlplane.db.base import Base

BigInt = BigInteger().with_variant(Integer(), "sqlite")  # sqlite autoincrement needs INTEGER


class TeamRow(Base):
    __tablename__ = "teams"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[float] = mapped_column(Float)


class UserRow(Base):
    __tablename__ = "users"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    role: Mapped[str] = mapped_column(String(16))  # admin | member
    created_at: Mapped[float] = mapped_column(Float)
    disabled: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class TokenRow(Base):
    """API tokens: only the sha256 of the secret is stored. kind: user | node | bootstrap."""

    __tablename__ = "api_tokens"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(128), default="")
    user_id: Mapped[int | None] = mapped_column(ForeignKey("users.id"), nullable=True)
    node_id: Mapped[int | None] = mapped_column(ForeignKey("nodes.id"), nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    expires_at: Mapped[float | None] = mapped_column(Float, nullable=True)  # None: never
    # bootstrap tokens: usable once, and only for node names matching the pattern (fullmatch)
    single_use: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    name_pattern: Mapped[str | None] = mapped_column(String(253), nullable=True)
    used_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class DashboardSessionRow(Base):
    """A dashboard sign-in: only the sha256 of the random session id (the cookie) is stored.

    Valid while not revoked, before expires_at, seen within the idle timeout, and while the token
    it was opened with is valid and its user enabled (migration 0005).
    """

    __tablename__ = "dashboard_sessions"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    session_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    token_id: Mapped[int] = mapped_column(ForeignKey("api_tokens.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)
    expires_at: Mapped[float] = mapped_column(Float, index=True)
    last_seen_at: Mapped[float] = mapped_column(Float)
    revoked: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())


class NodeRow(Base):
    __tablename__ = "nodes"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(253), unique=True)
    address: Mapped[str] = mapped_column(String(253))
    state: Mapped[str] = mapped_column(String(16), index=True)  # ready | not_ready | draining
    cordoned: Mapped[bool] = mapped_column(Boolean, default=False)
    # cordoned because too many of its accelerators are unhealthy (undone when they are healthy again)
    health_cordoned: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    cpu_milli: Mapped[int] = mapped_column(BigInt)
    memory_mib: Mapped[int] = mapped_column(BigInt)
    labels: Mapped[dict] = mapped_column(default=dict)
    backend: Mapped[str] = mapped_column(String(32))
    agent_version: Mapped[str] = mapped_column(String(32))
    epoch: Mapped[int] = mapped_column(BigInt, default=1)  # bumped when its assignments change
    last_heartbeat_at: Mapped[float] = mapped_column(Float)
    registered_at: Mapped[float] = mapped_column(Float)


class AcceleratorRow(Base):
    __tablename__ = "accelerators"
    __table_args__ = (
        CheckConstraint("allocated_milli BETWEEN 0 AND 1000", name="milli_within_one"),
        CheckConstraint("allocated_memory_mib >= 0 AND allocated_memory_mib <= memory_mib",
                        name="memory_within_device"),
    )
    uuid: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"), index=True)
    index: Mapped[int] = mapped_column(Integer)
    vendor: Mapped[str] = mapped_column(String(32))
    model: Mapped[str] = mapped_column(String(64))
    product_name: Mapped[str] = mapped_column(String(128), default="")
    memory_mib: Mapped[int] = mapped_column(BigInt)
    compute_capability: Mapped[str | None] = mapped_column(String(16), nullable=True)
    numa_node: Mapped[int | None] = mapped_column(Integer, nullable=True)
    interconnect_domain: Mapped[str | None] = mapped_column(String(128), nullable=True)
    labels: Mapped[dict] = mapped_column(default=dict)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    allocated_milli: Mapped[int] = mapped_column(Integer, default=0)
    allocated_memory_mib: Mapped[int] = mapped_column(BigInt, default=0)
    # why it was cordoned (an XID, lost, missing at registration, an admin) and since when;
    # it stays unhealthy until an admin marks it healthy again (migration 0006)
    unhealthy_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    unhealthy_since: Mapped[float | None] = mapped_column(Float, nullable=True)


class SampleRow(Base):
    """Latest telemetry per accelerator, written by heartbeats (kept apart from the row that
    slices lock, so heartbeats never contend with placements)."""

    __tablename__ = "accelerator_samples"
    uuid: Mapped[str] = mapped_column(String(128), primary_key=True)
    node_id: Mapped[int] = mapped_column(BigInt, index=True)
    ts: Mapped[float] = mapped_column(Float)
    healthy: Mapped[bool] = mapped_column(Boolean, default=True)
    gpu_util_pct: Mapped[float | None] = mapped_column(Float, nullable=True)
    unmanaged_memory_mib: Mapped[int] = mapped_column(BigInt, default=0)
    telemetry: Mapped[dict | None] = mapped_column(nullable=True)  # the AcceleratorSample


class QueueRow(Base):
    """A team's queue; names are unique within a team (every team has its own "default")."""

    __tablename__ = "queues"
    __table_args__ = (UniqueConstraint("team_id", "name", name="uq_queues_team_name"),)
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    guarantee_milli: Mapped[int] = mapped_column(BigInt, default=0)
    limit_milli: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    weight: Mapped[float] = mapped_column(Float, default=1.0)
    created_at: Mapped[float] = mapped_column(Float)
    # policy for members' jobs (admins may exceed it); None: no limit
    max_priority: Mapped[int | None] = mapped_column(Integer, nullable=True)
    allow_non_preemptible: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    max_min_runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_pending_jobs: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # per GPU model guarantees {model: milli} and GPU-memory quotas in MiB; None: none (migration 0006)
    model_guarantees: Mapped[dict | None] = mapped_column(nullable=True)
    memory_guarantee_mib: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    memory_limit_mib: Mapped[int | None] = mapped_column(BigInt, nullable=True)


class JobRow(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        UniqueConstraint("user_id", "idempotency_key", name="uq_jobs_idempotency"),
        Index("ix_jobs_status_id", "status", "id"),
        Index("ix_jobs_team_id", "team_id", "id"),
        Index("ix_jobs_queue_status", "queue_id", "status"),
    )
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    team_id: Mapped[int] = mapped_column(ForeignKey("teams.id"))
    queue_id: Mapped[int] = mapped_column(ForeignKey("queues.id"), index=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"))
    status: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict] = mapped_column()  # the normalised spec, validated once at submit
    request: Mapped[dict] = mapped_column()  # the scheduler Request (controlplane.core.requests)
    min_runtime_s: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    preemptible: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    pending_reason: Mapped[dict | None] = mapped_column(nullable=True)
    status_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    reason_code: Mapped[str | None] = mapped_column(String(32), nullable=True)  # OutcomeCode
    not_before: Mapped[float | None] = mapped_column(Float, nullable=True)  # held pending until then
    max_runtime_s: Mapped[float | None] = mapped_column(Float, nullable=True)  # stopped past it
    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=1)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    endpoint: Mapped[str | None] = mapped_column(String(512), nullable=True)
    progress: Mapped[dict | None] = mapped_column(nullable=True)
    idempotency_key: Mapped[str | None] = mapped_column(String(256), nullable=True)
    idempotency_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)  # sha256 of the body
    created_at: Mapped[float] = mapped_column(Float)
    started_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class AttemptRow(Base):
    """One try at running a job; its placement is its members' slice rows. stop_kind: StopKind."""

    __tablename__ = "attempts"
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"), index=True)
    number: Mapped[int] = mapped_column(Integer)
    active: Mapped[bool] = mapped_column(Boolean, default=True, index=True)
    master_node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    master_addr: Mapped[str] = mapped_column(String(253))
    master_port: Mapped[int] = mapped_column(Integer)
    stop_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    stop_reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[float] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class MemberRow(Base):
    """One rank of an attempt on one node. state: MemberState."""

    __tablename__ = "attempt_members"
    __table_args__ = (UniqueConstraint("attempt_id", "rank", name="uq_members_rank"),
                      Index("ix_members_node_state", "node_id", "state"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    attempt_id: Mapped[int] = mapped_column(ForeignKey("attempts.id"))
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id"))
    rank: Mapped[int] = mapped_column(Integer)
    node_id: Mapped[int] = mapped_column(ForeignKey("nodes.id"))
    cpu_milli: Mapped[int] = mapped_column(BigInt, default=0)
    memory_mib: Mapped[int] = mapped_column(BigInt, default=0)
    state: Mapped[str] = mapped_column(String(16), default="assigned")
    delivered: Mapped[bool] = mapped_column(Boolean, default=False)  # start order handed out
    pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)


class SliceRow(Base):
    """A granted piece of one accelerator. Live (counted on the accelerator) until released,
    when the member's process is confirmed gone; released rows stay as placement history."""

    __tablename__ = "slices"
    __table_args__ = (
        CheckConstraint("compute_milli BETWEEN 0 AND 1000", name="slice_milli"),
        CheckConstraint("memory_mib >= 0", name="slice_memory"),
        Index("ix_slices_live", "accelerator_uuid", postgresql_where=text("released_at IS NULL"),
              sqlite_where=text("released_at IS NULL")),
    )
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(ForeignKey("attempt_members.id"), index=True)
    accelerator_uuid: Mapped[str] = mapped_column(ForeignKey("accelerators.uuid"), index=True)
    compute_milli: Mapped[int] = mapped_column(Integer)
    memory_mib: Mapped[int] = mapped_column(BigInt)
    allocated_at: Mapped[float | None] = mapped_column(Float, nullable=True)
    released_at: Mapped[float | None] = mapped_column(Float, nullable=True)


class EventRow(Base):
    __tablename__ = "events"
    __table_args__ = (Index("ix_events_job", "job_id", "id"), Index("ix_events_node", "node_id", "id"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    ts: Mapped[float] = mapped_column(Float)
    kind: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(253))
    job_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    node_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    team_id: Mapped[int | None] = mapped_column(BigInt, nullable=True)
    actor: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    data: Mapped[dict | None] = mapped_column(nullable=True)


class SchedulerSettingsRow(Base):
    """The one row (id 1) of run-time scheduler settings an admin stored; none: server settings."""

    __tablename__ = "scheduler_settings"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    policy: Mapped[str] = mapped_column(String(64))
    weights: Mapped[dict | None] = mapped_column(nullable=True)  # plugin -> weight; None: the policy's
    updated_at: Mapped[float] = mapped_column(Float)
    updated_by: Mapped[str] = mapped_column(String(128))


class LeaseRow(Base):
    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128), default="")
    expires_at: Mapped[float] = mapped_column(Float, default=0.0)


class LogChunkRow(Base):
    __tablename__ = "log_chunks"
    __table_args__ = (UniqueConstraint("attempt_id", "rank", "stream", "offset", name="uq_log_offset"),
                      Index("ix_log_job", "job_id", "id"))
    id: Mapped[int] = mapped_column(BigInt, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(BigInt)
    attempt_id: Mapped[int] = mapped_column(BigInt)
    rank: Mapped[int] = mapped_column(Integer)
    stream: Mapped[str] = mapped_column(String(16))
    offset: Mapped[int] = mapped_column(BigInt)
    data: Mapped[str] = mapped_column(Text)


class StatusSeenRow(Base):
    """(node, seq) of status reports already applied, so agent replays are no-ops."""

    __tablename__ = "status_seen"
    node_id: Mapped[int] = mapped_column(BigInt, primary_key=True)
    seq: Mapped[int] = mapped_column(BigInt, primary_key=True)


from controlplane.db.usage import JobUsageRow  # noqa: E402,F401 - per-job usage (migration 0007)
