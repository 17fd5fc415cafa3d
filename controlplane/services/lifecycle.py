"""The one place a job's status changes, and what happens after placement: stops, member exits,
attempt outcomes, lost nodes.

``transition`` is a compare-and-set UPDATE (``WHERE status = <from>``) that checks the move against
``core.states.ALLOWED_TRANSITIONS`` and records the event. Slices are released only when a
member's process is confirmed gone (its exit report, a start order never delivered, or its node
lost), so a real GPU is never over-committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from controlplane.core.states import (LIVE_MEMBER_STATES, JobState, MemberState, OutcomeCode,
                                      PendingCode, RetryPolicy, StopKind, can_transition, outcome)
from controlplane.db.base import now
from controlplane.db.models import AttemptRow, JobRow, MemberRow, NodeRow, SliceRow
from controlplane.services import events
from controlplane.services.errors import Conflict

LIVE = tuple(s.value for s in LIVE_MEMBER_STATES)
# beyond the job's grace: the lost agent may have heard the server up to one heartbeat interval
# later than the server heard it, so its fence (and the old copy's SIGTERM) may start that late
LOST_REQUEUE_MARGIN_S = 15.0


class StaleState(Conflict):
    """The job's status changed since it was read (another transaction moved it first)."""


def transition(s: Session, job: JobRow, to: JobState, *, actor: str, reason: str | None,
               event: str | None = None, data: dict | None = None, **values: object) -> None:
    """Move ``job`` from its current status to ``to`` (compare-and-set), recording the event."""
    src = JobState(job.status)
    if not can_transition(src, to):
        raise Conflict(f"job {job.id} is {src.value}; it cannot become {to.value}")
    done = s.execute(update(JobRow).where(JobRow.id == job.id, JobRow.status == src.value)
                     .values(status=to.value, status_reason=reason, **values)
                     .execution_options(synchronize_session="fetch"))
    if done.rowcount != 1:
        raise StaleState(f"job {job.id} changed state meanwhile; retry")
    events.record(s, event or to.value, "job", job.id, actor, reason=reason, job_id=job.id,
                  team_id=job.team_id, data=data)


def bump_epochs(s: Session, node_ids: Iterable[int]) -> None:
    """Wake the long-polls of these nodes' agents: their assignments changed."""
    ids = sorted(set(node_ids))
    if ids:
        s.execute(update(NodeRow).where(NodeRow.id.in_(ids)).values(epoch=NodeRow.epoch + 1))


def active_attempt(s: Session, job_id: int, *, lock: bool = True) -> AttemptRow | None:
    q = select(AttemptRow).where(AttemptRow.job_id == job_id, AttemptRow.active.is_(True))
    return s.scalar(q.with_for_update() if lock else q)


def release_member(s: Session, member: MemberRow, *, exit_code: int | None, reason: str | None) -> None:
    """The member's process is gone: release its slices (kept as history) and close it."""
    s.execute(update(SliceRow).where(SliceRow.member_id == member.id, SliceRow.released_at.is_(None))
              .values(released_at=now()).execution_options(synchronize_session=False))
    member.state = MemberState.EXITED.value
    member.exit_code = exit_code
    member.reason = reason


def _live_members(s: Session, attempt_id: int, node_ids: list[int] | None = None) -> list[MemberRow]:
    q = select(MemberRow).where(MemberRow.attempt_id == attempt_id, MemberRow.state.in_(LIVE))
    if node_ids is not None:
        q = q.where(MemberRow.node_id.in_(node_ids))
    return list(s.scalars(q))


def request_stop(s: Session, job: JobRow, kind: StopKind, reason: str, actor: str) -> None:
    """Ask the job's agents to stop its active attempt; the job moves on once every member exits."""
    attempt = active_attempt(s, job.id)
    if attempt is None:
        return
    if attempt.stop_kind != StopKind.CANCEL.value:  # a cancel is never downgraded to a requeue
        attempt.stop_kind, attempt.stop_reason = kind.value, reason
    job.status_reason = f"stopping: {reason}"
    members = _live_members(s, attempt.id)
    for m in members:
        if m.state == MemberState.ASSIGNED.value and not m.delivered:  # never handed out: nothing runs
            release_member(s, m, exit_code=None, reason=reason)
    bump_epochs(s, [m.node_id for m in members])
    events.record(s, "stop_requested", "job", job.id, actor, reason=reason, job_id=job.id,
                  team_id=job.team_id, data={"kind": kind.value, "attempt": attempt.number})
    s.flush()
    maybe_finish(s, job, attempt)


def member_started(s: Session, job: JobRow, attempt: AttemptRow, member: MemberRow, *, pid: int | None,
                   actor: str, enforcement: dict | None) -> None:
    """A member's process runs; the first one moves a scheduled job to running."""
    member.state, member.pid = MemberState.RUNNING.value, pid
    if job.status == JobState.SCHEDULED.value and attempt.active:
        transition(s, job, JobState.RUNNING, actor=actor, reason=f"rank {member.rank} started",
                   started_at=job.started_at or now(),
                   data={"enforcement": enforcement} if enforcement else None)


def member_exited(s: Session, job: JobRow, attempt: AttemptRow, member: MemberRow, *,
                  exit_code: int | None, reason: str | None, failed: bool) -> None:
    """A member's process is gone: release its slices; a failure stops the rest of the gang."""
    release_member(s, member, exit_code=exit_code, reason=reason)
    if failed and attempt.stop_kind is None:
        job.exit_code = exit_code  # the first failure's code, not the stopped ranks' signals
        attempt.stop_kind = StopKind.FAILURE.value
        attempt.stop_reason = reason or f"rank {member.rank} exited with code {exit_code}"
        bump_epochs(s, [m.node_id for m in _live_members(s, attempt.id)])
    s.flush()
    maybe_finish(s, job, attempt)


def maybe_finish(s: Session, job: JobRow, attempt: AttemptRow) -> None:
    """When every member has exited, close the attempt and move the job on (final or requeued)."""
    if _live_members(s, attempt.id):
        return
    ts = now()
    attempt.active = False
    attempt.finished_at = ts
    codes = list(s.scalars(select(MemberRow.exit_code).where(MemberRow.attempt_id == attempt.id)))
    result = outcome(StopKind(attempt.stop_kind) if attempt.stop_kind else None, attempt.stop_reason,
                     codes, job.exit_code, RetryPolicy.from_spec(job.spec.get("retry")), job.attempt)
    if attempt.stop_kind == StopKind.LOST.value:
        events.record(s, "lost", "job", job.id, "system", reason=attempt.stop_reason, job_id=job.id,
                      team_id=job.team_id)
    common = dict(reason_code=result.code.value, endpoint=None)
    if result.state == JobState.PENDING:
        hold, reason = None, None
        if result.code == OutcomeCode.LOST:  # its agent fences the old copy, with a grace period
            wait = float(job.spec.get("grace_s", 30.0)) + LOST_REQUEUE_MARGIN_S
            hold = ts + wait
            reason = {"code": PendingCode.REQUEUE_HOLD.value, "unschedulable": False, "details": {},
                      "message": f"requeued from a lost node; held {wait:.0f} s so the old copy "
                                 "(stopped by its own agent) is gone before a new one starts"}
        transition(s, job, JobState.PENDING, actor="system", reason=result.reason, event="requeued",
                   pending_reason=reason, not_before=hold, exit_code=None, **common)
    else:  # success and exit failures carry their code; other endings keep what was recorded
        exit_code = result.exit_code if result.exit_code is not None else job.exit_code
        transition(s, job, result.state, actor="system", reason=result.reason, finished_at=ts,
                   pending_reason=None, exit_code=exit_code, data={"exit_code": exit_code}, **common)


def nodes_lost(s: Session, node_ids: list[int], reason: str) -> int:
    """Members on lost nodes are gone: release them, stop their gangs elsewhere, close attempts."""
    if not node_ids:
        return 0
    job_ids = sorted(set(s.scalars(select(MemberRow.job_id).where(MemberRow.node_id.in_(node_ids),
                                                                  MemberRow.state.in_(LIVE)))))
    for job_id in job_ids:
        job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
        attempt = active_attempt(s, job_id)
        if job is None or attempt is None:
            continue
        for m in _live_members(s, attempt.id, node_ids):
            release_member(s, m, exit_code=None, reason=reason)
        if attempt.stop_kind is None:
            attempt.stop_kind, attempt.stop_reason = StopKind.LOST.value, reason
        bump_epochs(s, [m.node_id for m in _live_members(s, attempt.id)])
        s.flush()
        maybe_finish(s, job, attempt)
    return len(job_ids)
