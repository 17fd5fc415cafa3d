"""Teams, queues (quotas), users and tokens: admins write, members read their own team's."""

from __future__ import annotations

from typing import TypeVar

from pydantic import BaseModel, ValidationError
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.core.states import UNFINISHED_STATES, JobState
from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import (AcceleratorRow, JobRow, MemberRow, QueueRow, SliceRow, TeamRow,
                                    TokenRow, UserRow)
from controlplane.services import events
from controlplane.schemas import QueueCreate, QueueUpdate, TeamCreate, TokenCreate, UserCreate
from controlplane.services.auth import forget_cached_tokens, hash_token, new_secret
from controlplane.services.errors import Conflict, Invalid, NotFound
from controlplane.services.jobs import validation_error
from controlplane.services.principal import Principal, require_admin
from controlplane.services.serialize import iso, parse_id

UNFINISHED = tuple(s.value for s in UNFINISHED_STATES)
M = TypeVar("M", bound=BaseModel)


def validated(model: type[M], body: M | dict) -> M:
    """The body as ``model`` (the API passes parsed schemas; the dashboard passes form dicts)."""
    if isinstance(body, model):
        return body
    try:
        return model.model_validate(body)
    except ValidationError as err:
        raise validation_error(err) from None


def _team(s: Session, name: str, field: str = "team") -> TeamRow:
    team = s.scalar(select(TeamRow).where(TeamRow.name == name))
    if team is None:
        raise Invalid(field, f"no team named {name!r}")
    return team


def list_teams(db: Database, who: Principal) -> dict:
    with db.read() as s:
        q = select(TeamRow).order_by(TeamRow.name)
        if not who.is_admin:
            q = q.where(TeamRow.id == who.team_id)
        return {"items": [{"id": str(t.id), "name": t.name, "created_at": iso(t.created_at)}
                          for t in s.scalars(q)]}


def create_team(db: Database, who: Principal, name: str) -> dict:
    require_admin(who)
    name = validated(TeamCreate, {"name": name}).name
    try:
        with db.tx() as s:
            team = TeamRow(name=name, created_at=now())
            s.add(team)
            s.flush()
            s.add(QueueRow(name="default", team_id=team.id, created_at=now()))
            events.record(s, "team_created", "team", name, who.actor, team_id=team.id)
            return {"id": str(team.id), "name": team.name, "created_at": iso(team.created_at)}
    except IntegrityError:
        raise Conflict(f"a team named {name!r} already exists") from None


EMPTY_STATS = {"allocated_milli": 0, "allocated_memory_mib": 0, "pending_jobs": 0, "running_jobs": 0}
POLICY_FIELDS = ("max_priority", "allow_non_preemptible", "max_min_runtime_s", "max_pending_jobs",
                 "memory_guarantee_mib", "memory_limit_mib")


def _queue_stats(s: Session, queue_ids: list[int]) -> dict[int, dict]:
    stats = {q: dict(EMPTY_STATS) for q in queue_ids}
    for qid, status, n in s.execute(select(JobRow.queue_id, JobRow.status, func.count())
                                    .where(JobRow.queue_id.in_(queue_ids),
                                           JobRow.status.in_(UNFINISHED))
                                    .group_by(JobRow.queue_id, JobRow.status)):
        key = "pending_jobs" if status == JobState.PENDING.value else "running_jobs"
        stats[qid][key] += n
    for qid, milli, mib in s.execute(select(JobRow.queue_id, func.sum(SliceRow.compute_milli),
                                            func.sum(SliceRow.memory_mib))
                                     .join(MemberRow, MemberRow.job_id == JobRow.id)
                                     .join(SliceRow, SliceRow.member_id == MemberRow.id)
                                     .where(JobRow.queue_id.in_(queue_ids), SliceRow.released_at.is_(None))
                                     .group_by(JobRow.queue_id)):
        stats[qid]["allocated_milli"] = int(milli or 0)
        stats[qid]["allocated_memory_mib"] = int(mib or 0)
    return stats


def _queue_dict(q: QueueRow, team: str, stats: dict) -> dict:
    policy = {f: getattr(q, f) for f in POLICY_FIELDS}
    policy["allow_non_preemptible"] = q.allow_non_preemptible is not False  # None before a flush
    return {"name": q.name, "team": team, "guarantee_milli": q.guarantee_milli,
            "limit_milli": q.limit_milli, "weight": q.weight, **policy,
            "model_guarantees_milli": dict(q.model_guarantees or {}), **stats}


def _columns(fields: dict) -> dict:
    """API fields -> QueueRow columns (the per-model guarantees are stored as ``model_guarantees``)."""
    out = dict(fields)
    if "model_guarantees_milli" in out:
        out["model_guarantees"] = out.pop("model_guarantees_milli") or None
    return out


def _check_quotas(q: QueueRow) -> None:
    if q.limit_milli is not None and q.limit_milli < q.guarantee_milli:
        raise Invalid("limit_milli", "must not be below guarantee_milli")
    if q.memory_limit_mib is not None and q.memory_guarantee_mib is not None \
            and q.memory_limit_mib < q.memory_guarantee_mib:
        raise Invalid("memory_limit_mib", "must not be below memory_guarantee_mib")


def list_queues(db: Database, who: Principal) -> dict:
    with db.read() as s:
        teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
        q = select(QueueRow).order_by(QueueRow.team_id, QueueRow.name)
        if not who.is_admin:
            q = q.where(QueueRow.team_id == who.team_id)
        rows = list(s.scalars(q))
        stats = _queue_stats(s, [r.id for r in rows])
        return {"items": [_queue_dict(r, teams[r.team_id], stats[r.id]) for r in rows]}


def create_queue(db: Database, who: Principal, body: QueueCreate | dict) -> dict:
    require_admin(who)
    req = validated(QueueCreate, body)
    name, team_name = req.name, req.team
    fields = req.model_dump(include=req.model_fields_set - {"name", "team"})  # for the event
    columns = _columns(req.model_dump(exclude={"name", "team"}))
    try:
        with db.tx() as s:
            team = _team(s, team_name)
            q = QueueRow(name=name, team_id=team.id, created_at=now(), **columns)
            s.add(q)
            s.flush()
            events.record(s, "queue_created", "queue", f"{team_name}/{name}", who.actor,
                          team_id=team.id, data=fields)
            return _queue_dict(q, team_name, dict(EMPTY_STATS))
    except IntegrityError:
        raise Conflict(f"team {team_name!r} already has a queue named {name!r}") from None


def _find_queue(s: Session, name: str, team: str | None) -> tuple[QueueRow, str]:
    q = select(QueueRow, TeamRow.name).join(TeamRow, TeamRow.id == QueueRow.team_id).where(QueueRow.name == name)
    if team:
        q = q.where(TeamRow.name == team)
    rows = s.execute(q.with_for_update(of=QueueRow)).all()
    if not rows:
        raise NotFound(f"no queue named {name!r}" + (f" in team {team!r}" if team else ""))
    if len(rows) > 1:
        raise Invalid("team", f"queue {name!r} exists in teams {sorted(r[1] for r in rows)}; pass ?team=")
    return rows[0][0], rows[0][1]


def update_queue(db: Database, who: Principal, name: str, team: str | None,
                 body: QueueUpdate | dict) -> dict:
    require_admin(who)
    req = validated(QueueUpdate, body)
    if req.name is not None and req.name != name:
        raise Invalid("name", f"a queue cannot be renamed ({name!r} to {req.name!r})")
    fields = req.changes()
    with db.tx() as s:
        q, team_name = _find_queue(s, name, team or req.team)
        for k, v in _columns(fields).items():
            setattr(q, k, v)
        _check_quotas(q)
        events.record(s, "queue_updated", "queue", f"{team_name}/{name}", who.actor,
                      team_id=q.team_id, data=fields)
        s.flush()
        out = _queue_dict(q, team_name, _queue_stats(s, [q.id])[q.id])
    db.cache.pop(("queue-policy", q.id), None)  # submits on this replica see the new policy at once
    return out


def delete_queue(db: Database, who: Principal, name: str, team: str | None) -> dict:
    require_admin(who)
    with db.tx() as s:
        q, team_name = _find_queue(s, name, team)
        active = s.scalar(select(func.count()).select_from(JobRow).where(
            JobRow.queue_id == q.id, JobRow.status.in_(UNFINISHED)))
        if active:
            raise Conflict(f"queue {team_name}/{name} holds {active} active job(s); cancel them first")
        if s.scalar(select(JobRow.id).where(JobRow.queue_id == q.id).limit(1)) is not None:
            raise Conflict(f"queue {team_name}/{name} has job history and cannot be deleted")
        out = _queue_dict(q, team_name, dict(EMPTY_STATS))
        s.delete(q)
        events.record(s, "queue_deleted", "queue", f"{team_name}/{name}", who.actor, team_id=q.team_id)
    db.cache.pop(("queue", team_name, name), None)
    return out


def list_users(db: Database, who: Principal) -> dict:
    require_admin(who)
    with db.read() as s:
        teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
        return {"items": [user_dict(u, teams[u.team_id])
                          for u in s.scalars(select(UserRow).order_by(UserRow.name))]}


def user_dict(u: UserRow, team: str) -> dict:
    return {"id": str(u.id), "name": u.name, "team": team, "role": u.role,
            "created_at": iso(u.created_at), "disabled": bool(u.disabled)}


def create_user(db: Database, who: Principal, body: UserCreate | dict) -> dict:
    require_admin(who)
    req = validated(UserCreate, body)
    name, team_name, role = req.name, req.team, req.role
    try:
        with db.tx() as s:
            team = _team(s, team_name)
            u = UserRow(name=name, team_id=team.id, role=role, created_at=now())
            s.add(u)
            s.flush()
            events.record(s, "user_created", "user", name, who.actor, team_id=team.id, data={"role": role})
            return user_dict(u, team_name)
    except IntegrityError:
        raise Conflict(f"a user named {name!r} already exists") from None


def create_token(db: Database, who: Principal, body: TokenCreate | dict) -> dict:
    require_admin(who)
    req = validated(TokenCreate, body)
    user_name, name = req.user, req.name
    expires_at = now() + float(req.expires_in_s) if req.expires_in_s is not None else None
    secret = new_secret("gpt")
    with db.tx() as s:
        user = s.scalar(select(UserRow).where(UserRow.name == user_name))
        if user is None:
            raise Invalid("user", f"no user named {user_name!r}")
        tok = TokenRow(token_hash=hash_token(secret), kind="user", name=name, user_id=user.id,
                       created_at=now(), expires_at=expires_at)
        s.add(tok)
        s.flush()
        events.record(s, "token_created", "token", tok.id, who.actor, team_id=user.team_id,
                      data={"user": user_name, "name": name, "expires_at": iso(expires_at)})
        return {"id": str(tok.id), "token": secret, "user": user_name, "name": name,
                "expires_at": iso(expires_at)}


def list_tokens(db: Database, who: Principal) -> dict:
    require_admin(who)
    with db.read() as s:
        users = dict(s.execute(select(UserRow.id, UserRow.name)).all())
        rows = s.scalars(select(TokenRow).where(TokenRow.revoked.is_(False)).order_by(TokenRow.id))
        return {"items": [{"id": str(t.id), "kind": t.kind, "name": t.name,
                           "user": users.get(t.user_id), "node_id": str(t.node_id) if t.node_id else None,
                           "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
                           "single_use": bool(t.single_use), "name_pattern": t.name_pattern,
                           "used_at": iso(t.used_at)}
                          for t in rows]}


def delete_token(db: Database, who: Principal, token_id: str) -> dict:
    require_admin(who)
    tid = parse_id(token_id, "token")
    with db.tx() as s:
        res = s.execute(update(TokenRow).where(TokenRow.id == tid, TokenRow.revoked.is_(False))
                        .values(revoked=True))
        if res.rowcount != 1:
            raise NotFound(f"no active token with id {token_id!r}")
        events.record(s, "token_revoked", "token", tid, who.actor)
    forget_cached_tokens(db)
    return {"id": str(tid), "revoked": True}
