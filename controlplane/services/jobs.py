"""Job use cases: submit (idempotent; the spec is validated and its Request derived once, here),
list (cursor pages), get, cancel; jobs as contract dicts."""

from __future__ import annotations

import hashlib
import json
import secrets
import time

from pydantic import ValidationError
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.core.requests import request_from_resources, request_to_json
from controlplane.core.states import FINAL_STATES, JobState, OutcomeCode, StopKind
from controlplane.db.base import now
from controlplane.db.database import Database, retry_deadlocks
from controlplane.db.models import EventRow, JobRow, QueueRow, TeamRow, UserRow
from controlplane.services import events, lifecycle
from controlplane.services.access import visible_job
from controlplane.services.errors import MAX_INT, Conflict, Invalid, ServiceError
from controlplane.services.paging import parse_cursor
from controlplane.services.placement import placements_of
from controlplane.services.principal import Principal
from controlplane.services.serialize import iso
from controlplane.services.submit_rules import QueuePolicy, check_pending_cap, check_policy, check_startable
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
        spec = parse_job_spec(body, estimate=False)  # the server never opens paths from specs
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


def submit(db: Database, who: Principal, body: object, idempotency_key: str | None, *,
           max_pending: int = 10_000) -> tuple[dict, bool]:
    """Store a validated spec as a pending job; returns (job, created). The same key with the same
    body again answers the first job; with another body it is a 422 (IETF idempotency-key draft)."""
    if idempotency_key is not None and not (0 < len(idempotency_key) <= 256 and idempotency_key.isprintable()):
        raise Invalid("Idempotency-Key", "must be 1 to 256 printable characters")
    body_hash = hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()
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
    normalised = spec.model_dump(mode="json")
    check_startable(normalised)
    if spec.kind == "inference" and not normalised["env"].get(API_KEY_ENV):
        # every endpoint gets a key; it is in the spec, so only the job's team (and admins) see it
        normalised["env"][API_KEY_ENV] = secrets.token_urlsafe(24)
    try:
        # Core inserts on one connection: the hot path of the API, kept to two statements
        with db.engine.begin() as conn:
            team_id, queue_id = _resolve_queue(db, conn, team_name, spec.queue)
            policy = _queue_policy(db, conn, queue_id, f"{team_name}/{spec.queue}")
            if not who.is_admin:
                check_policy(policy, normalised, spec.priority_value)
            check_pending_cap(policy, _pending_count(db, conn, queue_id), max_pending)
            fields = dict(name=spec.name, kind=spec.kind, team_id=team_id, queue_id=queue_id,
                          user_id=who.user_id, status=JobState.PENDING.value,
                          priority=spec.priority_value, spec=normalised,
                          request=request_to_json(request_from_resources(normalised["resources"])),
                          min_runtime_s=float(spec.min_runtime_s), preemptible=bool(spec.preemptible),
                          max_runtime_s=spec.max_runtime_s,
                          max_attempts=spec.retry.max_attempts, idempotency_key=idempotency_key,
                          idempotency_hash=body_hash if idempotency_key else None,
                          created_at=now(), attempt=0, pending_reason=None, status_reason=None,
                          reason_code=None, exit_code=None, endpoint=None, progress=None,
                          started_at=None, finished_at=None)
            job_id = conn.execute(_INSERT_JOB, fields).scalar_one()
            conn.execute(_INSERT_EVENT, dict(
                ts=fields["created_at"], kind="submitted", object_type="job", object_id=str(job_id),
                actor=who.actor, reason="submitted", data={"queue": spec.queue}, job_id=job_id,
                team_id=team_id, node_id=None))
        out = job_dict(JobRow(id=job_id, **fields), team_name, spec.queue, who.user, [])
    except IntegrityError:
        if idempotency_key:  # the key was used before (a retry): answer with that job
            existing = _by_key(db, who, idempotency_key, body_hash)
            if existing is not None:
                return existing, False
        raise
    return out, True


def _by_key(db: Database, who: Principal, key: str, body_hash: str) -> dict | None:
    with db.read() as s:
        job = s.scalar(select(JobRow).where(JobRow.user_id == who.user_id,
                                            JobRow.idempotency_key == key))
        if job is None:
            return None
        if job.idempotency_hash not in (None, body_hash):
            raise Invalid("Idempotency-Key", f"was already used for job {job.id} with a different body; "
                                             "use a new key for a new job")
        return dicts_for(s, [job])[0]


API_KEY_ENV = "GPUPOOL_API_KEY"  # the serving endpoint's key (workloads/inference reads it)
QUEUE_FACTS_TTL_S = 1.0  # policies and pending counts are re-read at most this often per replica


def _queue_policy(db: Database, conn, queue_id: int, name: str) -> QueuePolicy:  # noqa: ANN001
    key = ("queue-policy", queue_id)
    hit = db.cache.get(key)
    if hit and hit[1] > time.monotonic():
        return hit[0]
    q = QueueRow.__table__.c
    row = conn.execute(select(q.max_priority, q.allow_non_preemptible, q.max_min_runtime_s,
                              q.max_pending_jobs).where(q.id == queue_id)).one()
    policy = QueuePolicy(name, row[0], bool(row[1]), row[2], row[3])
    db.cache[key] = (policy, time.monotonic() + QUEUE_FACTS_TTL_S)
    return policy


def _pending_count(db: Database, conn, queue_id: int) -> int:  # noqa: ANN001
    """The queue's pending jobs, counted at most once a second per replica and counted up by each
    submit in between (so a cap may be overshot by a second's worth of submits, never more)."""
    key = ("queue-pending", queue_id)
    hit = db.cache.get(key)
    if hit and hit[1] > time.monotonic():
        db.cache[key] = (hit[0] + 1, hit[1])
        return hit[0]
    j = JobRow.__table__.c
    count = conn.execute(select(func.count()).select_from(JobRow.__table__).where(
        j.queue_id == queue_id, j.status == JobState.PENDING.value)).scalar_one()
    db.cache[key] = (count + 1, time.monotonic() + QUEUE_FACTS_TTL_S)
    return count


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
        "status_reason": job.status_reason, "reason_code": job.reason_code,
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
    placements = placements_of(s, [j.id for j in jobs if j.attempt > 0])
    return [job_dict(j, teams.get(j.team_id, "?"), queues.get(j.queue_id, "?"),
                     users.get(j.user_id), placements.get(j.id, []),
                     include_spec=include_spec) for j in jobs]


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
    before = parse_cursor(cursor)
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
    with db.tx() as s:
        job = visible_job(s, who, job_id, lock=True)
        state = JobState(job.status)
        if state in FINAL_STATES:
            raise Conflict(f"job {job.id} is already {job.status}; nothing to cancel")
        reason = f"cancelled by {who.actor}"
        if state == JobState.PENDING:
            lifecycle.transition(s, job, JobState.CANCELLED, actor=who.actor, reason=reason,
                                 finished_at=now(), pending_reason=None,
                                 reason_code=OutcomeCode.CANCELLED.value)
        else:
            lifecycle.request_stop(s, job, StopKind.CANCEL, reason, who.actor)
        s.flush()
        s.refresh(job)
        return dicts_for(s, [job])[0]


def job_events(db: Database, who: Principal, job_id: str) -> dict:
    with db.read() as s:
        return {"items": events.job_events(s, visible_job(s, who, job_id))}
