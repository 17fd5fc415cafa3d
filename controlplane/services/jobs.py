"""Job use cases: submit (idempotent), list (cursor pages), get, cancel; jobs as contract dicts."""

from __future__ import annotations

import json

from pydantic import ValidationError
from sqlalchemy import insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.core.states import FINAL_STATES, JobState
from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import AttemptRow, EventRow, JobRow, QueueRow, TeamRow, UserRow
from controlplane.services import events
from controlplane.services.auth import Principal
from controlplane.services.errors import MAX_INT, Conflict, Invalid, NotFound, ServiceError
from controlplane.services.serialize import iso, parse_id
from workloads.specs import parse_job_spec

MAX_SPEC_BYTES = 256 * 1024
_INSERT_JOB = insert(JobRow.__table__).returning(JobRow.__table__.c.id)  # built once: the hot path
_INSERT_EVENT = insert(EventRow.__table__)


def validation_error(err: ValidationError, kind: str | None = None) -> ServiceError:
    """A pydantic error as a 422 naming every bad field (the union tag is left out)."""
    items = []
    for e in err.errors():
        loc = [str(x) for x in e.get("loc", ())]
        if loc and kind and loc[0] == kind:
            loc = loc[1:]
        items.append({"field": ".".join(loc) or "body", "message": e.get("msg", "invalid")})
    return Invalid.many(items)


def parse_spec(body: object):  # noqa: ANN201
    if not isinstance(body, dict):
        raise Invalid("body", "a job spec must be a JSON object")
    kind = body.get("kind", "custom")
    try:
        spec = parse_job_spec(body)
    except ValidationError as err:
        raise validation_error(err, kind if isinstance(kind, str) else None) from None
    res = spec.resources
    for field in ("gpu_memory_mib", "cpu_milli", "memory_mib", "min_gpu_memory_mib"):
        value = getattr(res, field)
        if value > MAX_INT:
            raise Invalid(f"resources.{field}", f"must be at most {MAX_INT}, got {value}")
    if not -1_000_000 <= spec.priority_value <= 1_000_000:
        raise Invalid("priority", "must be between -1000000 and 1000000")
    if len(json.dumps(body)) > MAX_SPEC_BYTES:
        raise Invalid("body", f"spec is larger than {MAX_SPEC_BYTES} bytes")
    return spec


def submit(db: Database, who: Principal, body: object, idempotency_key: str | None) -> tuple[dict, bool]:
    """Store a validated spec as a pending job; returns (job, created). Same key again: same job."""
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 256:
        raise Invalid("Idempotency-Key", "must be 1 to 256 characters")
    if isinstance(body, dict) and "team" in body:
        body = dict(body)
        team_name = body.pop("team")
        if not isinstance(team_name, str):
            raise Invalid("team", "must be a team name")
        if not who.is_admin and team_name != who.team:
            raise Invalid("team", "members submit to their own team only")
    else:
        team_name = who.team
    spec = parse_spec(body)
    res = spec.resources
    try:
        # Core inserts on one connection: the hot path of the API, kept to two statements
        with db.engine.begin() as conn:
            team_id, queue_id = _resolve_queue(db, conn, team_name, spec.queue)
            fields = dict(name=spec.name, kind=spec.kind, team_id=team_id, queue_id=queue_id,
                          user_id=who.user_id, status=JobState.PENDING.value,
                          priority=spec.priority_value, spec=spec.model_dump(mode="json"),
                          request={"gpu": res.gpu, "gpu_memory_mib": res.gpu_memory_mib,
                                   "cpu_milli": res.cpu_milli, "memory_mib": res.memory_mib,
                                   "nodes": res.nodes},
                          max_attempts=spec.retry.max_attempts, idempotency_key=idempotency_key,
                          created_at=now(), attempt=0, pending_reason=None, status_reason=None,
                          exit_code=None, endpoint=None, progress=None, started_at=None,
                          finished_at=None)
            job_id = conn.execute(_INSERT_JOB, fields).scalar_one()
            conn.execute(_INSERT_EVENT, dict(
                ts=fields["created_at"], kind="submitted", object_type="job", object_id=str(job_id),
                actor=who.actor, reason="submitted", data={"queue": spec.queue}, job_id=job_id,
                team_id=team_id, node_id=None))
        out = job_dict(JobRow(id=job_id, **fields), team_name, spec.queue, who.user, [])
    except IntegrityError:
        if idempotency_key:  # the key was used before (a retry): answer with that job
            existing = _by_key(db, who, idempotency_key)
            if existing is not None:
                return existing, False
        raise
    return out, True


def _by_key(db: Database, who: Principal, key: str) -> dict | None:
    with db.read() as s:
        job = s.scalar(select(JobRow).where(JobRow.user_id == who.user_id,
                                            JobRow.idempotency_key == key))
        return dicts_for(s, [job])[0] if job else None


def _resolve_queue(db: Database, s, team: str, queue: str) -> tuple[int, int]:  # noqa: ANN001
    key = ("queue", team, queue)
    hit = db.cache.get(key)
    if hit:
        return hit
    row = s.execute(select(TeamRow.id, QueueRow.id).join(QueueRow, QueueRow.team_id == TeamRow.id)
                    .where(TeamRow.name == team, QueueRow.name == queue)).first()
    if row is None:
        if s.scalar(select(TeamRow.id).where(TeamRow.name == team)) is None:
            raise Invalid("team", f"no team named {team!r}")
        raise Invalid("queue", f"team {team!r} has no queue named {queue!r}; "
                               "see GET /api/v1/queues")
    db.cache[key] = (row[0], row[1])
    return row[0], row[1]


def public_request(spec: dict | None, stored: dict | None) -> dict:
    """The job's request as the API shows it: the spec's ``resources`` (stored normalised)."""
    res = (spec or {}).get("resources") or stored or {}
    return {"gpu": res.get("gpu", 0), "gpu_memory_mib": res.get("gpu_memory_mib", 0),
            "cpu_milli": res.get("cpu_milli", 0), "memory_mib": res.get("memory_mib", 0),
            "nodes": res.get("nodes", 1)}


def job_dict(job: JobRow, team: str, queue: str, user: str | None, placement: list, *,
             include_spec: bool = True) -> dict:
    """A job as ``schemas.Job``; list pages leave the (up to 256 KiB) spec out unless asked."""
    return {
        "id": str(job.id), "name": job.name, "kind": job.kind, "team": team, "queue": queue,
        "user": user, "status": job.status, "priority": job.priority,
        "spec": job.spec if include_spec else None, "request": public_request(job.spec, job.request),
        "pending_reason": job.pending_reason, "attempt": job.attempt,
        "max_attempts": job.max_attempts, "exit_code": job.exit_code, "endpoint": job.endpoint,
        "progress": job.progress, "placement": placement, "created_at": iso(job.created_at),
        "started_at": iso(job.started_at), "finished_at": iso(job.finished_at),
        "status_reason": job.status_reason,
    }


def dicts_for(s: Session, jobs: list[JobRow], *, include_spec: bool = True) -> list[dict]:
    """Contract dicts for jobs, with names and the latest attempt's placement, in few queries."""
    if not jobs:
        return []
    teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
    queues = dict(s.execute(select(QueueRow.id, QueueRow.name)
                            .where(QueueRow.id.in_({j.queue_id for j in jobs}))).all())
    users = dict(s.execute(select(UserRow.id, UserRow.name)
                           .where(UserRow.id.in_({j.user_id for j in jobs}))).all())
    placements: dict[int, tuple[int, list]] = {}
    with_attempts = [j.id for j in jobs if j.attempt > 0]
    if with_attempts:
        for job_id, number, placement in s.execute(
                select(AttemptRow.job_id, AttemptRow.number, AttemptRow.placement)
                .where(AttemptRow.job_id.in_(with_attempts))):
            if number >= placements.get(job_id, (0, []))[0]:
                placements[job_id] = (number, placement or [])
    return [job_dict(j, teams.get(j.team_id, "?"), queues.get(j.queue_id, "?"),
                     users.get(j.user_id), placements.get(j.id, (0, []))[1],
                     include_spec=include_spec) for j in jobs]


def visible_job(s: Session, who: Principal, job_id: str, *, lock: bool = False) -> JobRow:
    """The job if the caller may see it; 404 otherwise (other teams' ids look unknown)."""
    q = select(JobRow).where(JobRow.id == parse_id(job_id, "job"))
    if lock:
        q = q.with_for_update()
    job = s.scalar(q)
    if job is None or (not who.is_admin and job.team_id != who.team_id):
        raise NotFound(f"no job with id {job_id!r}")
    return job


def get_job(db: Database, who: Principal, job_id: str) -> dict:
    with db.read() as s:
        return dicts_for(s, [visible_job(s, who, job_id)])[0]


def list_jobs(db: Database, who: Principal, *, status: str | None = None, queue: str | None = None,
              team: str | None = None, limit: int = 50, cursor: str | None = None,
              include_spec: bool = False) -> dict:
    """A page of ``schemas.JobPage``: newest first, specs only when ``include_spec``."""
    q = select(JobRow).order_by(JobRow.id.desc()).limit(limit + 1)
    if status:
        states = [x.strip() for x in status.split(",") if x.strip()]
        bad = [x for x in states if x not in {st.value for st in JobState}]
        if bad:
            raise Invalid("status", f"unknown status {bad[0]!r}; use one of "
                                    f"{', '.join(st.value for st in JobState)}")
        q = q.where(JobRow.status.in_(states))
    before = events.parse_cursor(cursor)
    if before is not None:
        q = q.where(JobRow.id < before)
    if not who.is_admin:
        q = q.where(JobRow.team_id == who.team_id)
    with db.read() as s:
        if team:
            q = q.where(JobRow.team_id == select(TeamRow.id).where(TeamRow.name == team)
                        .scalar_subquery())
        if queue:
            q = q.where(JobRow.queue_id.in_(select(QueueRow.id).where(QueueRow.name == queue)))
        rows = list(s.scalars(q))
        more = len(rows) > limit
        rows = rows[:limit]
        items = dicts_for(s, rows, include_spec=include_spec)
    return {"items": items, "next_cursor": str(rows[-1].id) if more and rows else None}


@retry_deadlocks
def cancel(db: Database, who: Principal, job_id: str) -> dict:
    """Pending: cancelled now. Scheduled/running: stop order; cancelled once the exit is confirmed."""
    from controlplane.services.lifecycle import request_stop

    with db.tx() as s:
        job = visible_job(s, who, job_id, lock=True)
        state = JobState(job.status)
        if state in FINAL_STATES:
            raise Conflict(f"job {job.id} is already {job.status}; nothing to cancel")
        reason = f"cancelled by {who.actor}"
        if state == JobState.PENDING:
            done = s.execute(update(JobRow).where(JobRow.id == job.id, JobRow.status == "pending")
                             .values(status="cancelled", status_reason=reason, finished_at=now(),
                                     pending_reason=None))
            if done.rowcount != 1:
                raise Conflict(f"job {job.id} changed state meanwhile; retry")
            events.record(s, "cancelled", "job", job.id, who.actor, reason=reason,
                          job_id=job.id, team_id=job.team_id)
        else:
            request_stop(s, job, "cancel", reason, who.actor)
        s.flush()
        s.refresh(job)
        return dicts_for(s, [job])[0]


def job_events(db: Database, who: Principal, job_id: str) -> dict:
    with db.read() as s:
        return {"items": events.job_events(s, visible_job(s, who, job_id))}
