"""Job lifecycle after placement: stop requests, member exits, attempt outcomes, lost nodes.

Slices are freed only when a member's process is confirmed gone (its exit report, a start
order never delivered, or its node lost), so a real GPU is never over-committed.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from controlplane.db.base import now
from controlplane.db.models import AttemptRow, JobRow, MemberRow, NodeRow, SliceRow
from controlplane.services import events

LIVE = ("assigned", "running")


def bump_epochs(s: Session, node_ids: Iterable[int]) -> None:
    ids = sorted(set(node_ids))
    if ids:
        s.execute(update(NodeRow).where(NodeRow.id.in_(ids)).values(epoch=NodeRow.epoch + 1))


def active_attempt(s: Session, job_id: int, *, lock: bool = True) -> AttemptRow | None:
    q = select(AttemptRow).where(AttemptRow.job_id == job_id, AttemptRow.active.is_(True))
    return s.scalar(q.with_for_update() if lock else q)


def free_member(s: Session, member: MemberRow, *, exit_code: int | None, reason: str | None) -> None:
    s.execute(delete(SliceRow).where(SliceRow.member_id == member.id))
    member.state = "exited"
    member.exit_code = exit_code
    member.reason = reason


def request_stop(s: Session, job: JobRow, kind: str, reason: str, actor: str) -> None:
    """Ask the job's agents to stop it; kind: cancel | preempt | lost | failure (why)."""
    attempt = active_attempt(s, job.id)
    if attempt is None:
        return
    if attempt.stop_kind != "cancel":  # a cancel is never downgraded to a requeue
        attempt.stop_kind, attempt.stop_reason = kind, reason
    job.status_reason = f"stopping: {reason}"
    members = list(s.scalars(select(MemberRow).where(MemberRow.attempt_id == attempt.id,
                                                     MemberRow.state.in_(LIVE))))
    for m in members:
        if m.state == "assigned" and not m.delivered:  # the agent never saw it: nothing runs
            free_member(s, m, exit_code=None, reason=reason)
    bump_epochs(s, [m.node_id for m in members])
    events.record(s, "stop_requested", "job", job.id, actor, reason=reason, job_id=job.id,
                  team_id=job.team_id, data={"kind": kind, "attempt": attempt.number})
    s.flush()
    maybe_finish(s, job, attempt)


def member_exited(s: Session, job: JobRow, attempt: AttemptRow, member: MemberRow, *,
                  exit_code: int | None, reason: str | None, failed: bool) -> None:
    """A member's process is gone: free its slices; a failure stops the rest of the gang."""
    free_member(s, member, exit_code=exit_code, reason=reason)
    if failed and attempt.stop_kind is None:
        job.exit_code = exit_code  # the first failure's code, not the stopped ranks' signals
        attempt.stop_kind = "failure"
        attempt.stop_reason = reason or f"rank {member.rank} exited with code {exit_code}"
        others = s.scalars(select(MemberRow.node_id).where(MemberRow.attempt_id == attempt.id,
                                                           MemberRow.state.in_(LIVE)))
        bump_epochs(s, list(others))
    s.flush()
    maybe_finish(s, job, attempt)


def maybe_finish(s: Session, job: JobRow, attempt: AttemptRow) -> None:
    """When every member has exited, close the attempt and move the job on (final or requeued)."""
    live = s.scalar(select(MemberRow.id).where(MemberRow.attempt_id == attempt.id,
                                               MemberRow.state.in_(LIVE)).limit(1))
    if live is not None:
        return
    ts = now()
    attempt.active = False
    attempt.finished_at = ts
    codes = [c for c in s.scalars(select(MemberRow.exit_code).where(
        MemberRow.attempt_id == attempt.id)) if c is not None]
    retry = (job.spec or {}).get("retry", {})
    kind, reason = attempt.stop_kind, attempt.stop_reason
    job.endpoint = None
    if kind == "cancel":
        _final(s, job, "cancelled", reason, ts)
    elif kind == "preempt":
        if retry.get("on_preemption", True):
            _requeue(s, job, f"preempted: {reason}")
        else:
            _final(s, job, "failed", f"preempted and retry.on_preemption is false: {reason}", ts)
    elif kind == "lost":
        events.record(s, "lost", "job", job.id, "system", reason=reason, job_id=job.id,
                      team_id=job.team_id)
        if retry.get("on_lost", True) and job.attempt < job.max_attempts:
            _requeue(s, job, f"lost: {reason}")
        else:
            _final(s, job, "failed", f"lost after {job.attempt} attempt(s): {reason}", ts)
    elif kind == "failure":
        if job.exit_code is None:
            job.exit_code = next((c for c in codes if c != 0), None)
        if retry.get("on_failure", False) and job.attempt < job.max_attempts:
            _requeue(s, job, f"failed: {reason}")
        else:
            _final(s, job, "failed", reason, ts)
    else:
        job.exit_code = 0
        _final(s, job, "succeeded", "all ranks exited 0", ts)


def _final(s: Session, job: JobRow, status: str, reason: str | None, ts: float) -> None:
    job.status, job.status_reason, job.finished_at, job.pending_reason = status, reason, ts, None
    events.record(s, status, "job", job.id, "system", reason=reason, job_id=job.id,
                  team_id=job.team_id, data={"exit_code": job.exit_code})


def _requeue(s: Session, job: JobRow, reason: str) -> None:
    job.status, job.status_reason, job.pending_reason, job.exit_code = "pending", reason, None, None
    events.record(s, "requeued", "job", job.id, "system", reason=reason, job_id=job.id,
                  team_id=job.team_id)


def nodes_lost(s: Session, node_ids: list[int], reason: str) -> int:
    """Members on lost nodes are gone: free them, stop their gangs elsewhere, close attempts."""
    if not node_ids:
        return 0
    members = list(s.scalars(select(MemberRow).where(MemberRow.node_id.in_(node_ids),
                                                     MemberRow.state.in_(LIVE))))
    job_ids = sorted({m.job_id for m in members})
    for job_id in job_ids:
        job = s.scalar(select(JobRow).where(JobRow.id == job_id).with_for_update())
        attempt = active_attempt(s, job_id)
        if job is None or attempt is None:
            continue
        for m in s.scalars(select(MemberRow).where(MemberRow.attempt_id == attempt.id,
                                                   MemberRow.node_id.in_(node_ids),
                                                   MemberRow.state.in_(LIVE))):
            free_member(s, m, exit_code=None, reason=reason)
        if attempt.stop_kind is None:
            attempt.stop_kind, attempt.stop_reason = "lost", reason
        others = s.scalars(select(MemberRow.node_id).where(MemberRow.attempt_id == attempt.id,
                                                           MemberRow.state.in_(LIVE)))
        bump_epochs(s, list(others))
        s.flush()
        maybe_finish(s, job, attempt)
    return len(job_ids)
