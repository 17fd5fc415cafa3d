"""Teams, queues (quotas), users and tokens: admins write, members read their own team's."""

from __future__ import annotations

import re

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from controlplane.core.states import UNFINISHED_STATES, JobState
from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import (AcceleratorRow, JobRow, MemberRow, QueueRow, SliceRow, TeamRow,
                                    TokenRow, UserRow)
from controlplane.services import events
from controlplane.services.auth import forget_cached_tokens, hash_token, new_secret
from controlplane.services.principal import Principal, require_admin
from controlplane.services.errors import MAX_INT, Conflict, Invalid, NotFound
from controlplane.services.serialize import iso, parse_id

UNFINISHED = tuple(s.value for s in UNFINISHED_STATES)
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def check_name(field: str, value: object) -> str:
    if not isinstance(value, str) or not NAME.match(value):
        raise Invalid(field, "must be 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return value


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
    check_name("name", name)
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


def _queue_stats(s: Session, queue_ids: list[int]) -> dict[int, dict]:
    stats = {q: {"allocated_milli": 0, "pending_jobs": 0, "running_jobs": 0} for q in queue_ids}
    for qid, status, n in s.execute(select(JobRow.queue_id, JobRow.status, func.count())
                                    .where(JobRow.queue_id.in_(queue_ids),
                                           JobRow.status.in_(UNFINISHED))
                                    .group_by(JobRow.queue_id, JobRow.status)):
        key = "pending_jobs" if status == JobState.PENDING.value else "running_jobs"
        stats[qid][key] += n
    for qid, milli in s.execute(select(JobRow.queue_id, func.sum(SliceRow.compute_milli))
                                .join(MemberRow, MemberRow.job_id == JobRow.id)
                                .join(SliceRow, SliceRow.member_id == MemberRow.id)
                                .where(JobRow.queue_id.in_(queue_ids), SliceRow.released_at.is_(None))
                                .group_by(JobRow.queue_id)):
        stats[qid]["allocated_milli"] = int(milli or 0)
    return stats


def _queue_dict(q: QueueRow, team: str, stats: dict) -> dict:
    return {"name": q.name, "team": team, "guarantee_milli": q.guarantee_milli,
            "limit_milli": q.limit_milli, "weight": q.weight, **stats}


def list_queues(db: Database, who: Principal) -> dict:
    with db.read() as s:
        teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
        q = select(QueueRow).order_by(QueueRow.team_id, QueueRow.name)
        if not who.is_admin:
            q = q.where(QueueRow.team_id == who.team_id)
        rows = list(s.scalars(q))
        stats = _queue_stats(s, [r.id for r in rows])
        return {"items": [_queue_dict(r, teams[r.team_id], stats[r.id]) for r in rows]}


def _quota_fields(body: dict, *, partial: bool) -> dict:
    out = {}
    for field in ("guarantee_milli", "limit_milli"):
        if field in body:
            v = body[field]
            if v is None and field == "limit_milli":
                out[field] = None
                continue
            if isinstance(v, bool) or not isinstance(v, int):
                raise Invalid(field, "must be an integer number of milli (1000 = one GPU)")
            if not 0 <= v <= MAX_INT:
                raise Invalid(field, f"must be between 0 and {MAX_INT}")
            out[field] = v
    if "weight" in body:
        v = body["weight"]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1_000_000:
            raise Invalid("weight", "must be a number above 0 and at most 1000000")
        out["weight"] = float(v)
    unknown = set(body) - {"name", "team", "guarantee_milli", "limit_milli", "weight"}
    if unknown:
        raise Invalid(sorted(unknown)[0], "unknown field")
    g, lim = out.get("guarantee_milli"), out.get("limit_milli")
    if g is not None and lim is not None and lim < g:
        raise Invalid("limit_milli", "must not be below guarantee_milli")
    return out


def create_queue(db: Database, who: Principal, body: dict) -> dict:
    require_admin(who)
    name = check_name("name", body.get("name"))
    team_name = check_name("team", body.get("team"))
    fields = _quota_fields(body, partial=False)
    try:
        with db.tx() as s:
            team = _team(s, team_name)
            q = QueueRow(name=name, team_id=team.id, created_at=now(),
                         guarantee_milli=fields.get("guarantee_milli", 0),
                         limit_milli=fields.get("limit_milli"), weight=fields.get("weight", 1.0))
            s.add(q)
            s.flush()
            events.record(s, "queue_created", "queue", f"{team_name}/{name}", who.actor,
                          team_id=team.id, data=fields)
            return _queue_dict(q, team_name, {"allocated_milli": 0, "pending_jobs": 0, "running_jobs": 0})
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


def update_queue(db: Database, who: Principal, name: str, team: str | None, body: dict) -> dict:
    require_admin(who)
    fields = _quota_fields({k: v for k, v in body.items() if k not in ("name", "team")}, partial=True)
    with db.tx() as s:
        q, team_name = _find_queue(s, name, team or body.get("team"))
        for k, v in fields.items():
            setattr(q, k, v)
        if q.limit_milli is not None and q.limit_milli < q.guarantee_milli:
            raise Invalid("limit_milli", "must not be below guarantee_milli")
        events.record(s, "queue_updated", "queue", f"{team_name}/{name}", who.actor,
                      team_id=q.team_id, data=fields)
        s.flush()
        return _queue_dict(q, team_name, _queue_stats(s, [q.id])[q.id])


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
        out = _queue_dict(q, team_name, {"allocated_milli": 0, "pending_jobs": 0, "running_jobs": 0})
        s.delete(q)
        events.record(s, "queue_deleted", "queue", f"{team_name}/{name}", who.actor, team_id=q.team_id)
    db.cache.pop(("queue", team_name, name), None)
    return out


def list_users(db: Database, who: Principal) -> dict:
    require_admin(who)
    with db.read() as s:
        teams = dict(s.execute(select(TeamRow.id, TeamRow.name)).all())
        return {"items": [{"id": str(u.id), "name": u.name, "team": teams[u.team_id], "role": u.role,
                           "created_at": iso(u.created_at)}
                          for u in s.scalars(select(UserRow).order_by(UserRow.name))]}


def create_user(db: Database, who: Principal, body: dict) -> dict:
    require_admin(who)
    name = check_name("name", body.get("name"))
    team_name = check_name("team", body.get("team"))
    role = body.get("role", "member")
    if role not in ("admin", "member"):
        raise Invalid("role", "must be 'admin' or 'member'")
    try:
        with db.tx() as s:
            team = _team(s, team_name)
            u = UserRow(name=name, team_id=team.id, role=role, created_at=now())
            s.add(u)
            s.flush()
            events.record(s, "user_created", "user", name, who.actor, team_id=team.id, data={"role": role})
            return {"id": str(u.id), "name": name, "team": team_name, "role": role,
                    "created_at": iso(u.created_at)}
    except IntegrityError:
        raise Conflict(f"a user named {name!r} already exists") from None


MAX_TOKEN_LIFETIME_S = 10 * 365 * 86400


def _expires_at(body: dict) -> float | None:
    """``expires_in_s`` (optional, seconds from now) -> the token's expiry time."""
    value = body.get("expires_in_s")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= MAX_TOKEN_LIFETIME_S:
        raise Invalid("expires_in_s", f"must be a positive number of seconds, at most "
                                      f"{MAX_TOKEN_LIFETIME_S} (ten years); leave it out for no expiry")
    return now() + float(value)


def create_token(db: Database, who: Principal, body: dict) -> dict:
    require_admin(who)
    user_name = check_name("user", body.get("user"))
    name = body.get("name", "")
    if not isinstance(name, str) or len(name) > 128:
        raise Invalid("name", "must be a string of at most 128 characters")
    expires_at = _expires_at(body)
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


def create_bootstrap_token(db: Database, who: Principal) -> dict:
    require_admin(who)
    secret = new_secret("gpb")
    with db.tx() as s:
        tok = TokenRow(token_hash=hash_token(secret), kind="bootstrap", name="agent bootstrap",
                       created_at=now())
        s.add(tok)
        s.flush()
        events.record(s, "bootstrap_token_created", "token", tok.id, who.actor)
        return {"id": str(tok.id), "token": secret}


def list_tokens(db: Database, who: Principal) -> dict:
    require_admin(who)
    with db.read() as s:
        users = dict(s.execute(select(UserRow.id, UserRow.name)).all())
        rows = s.scalars(select(TokenRow).where(TokenRow.revoked.is_(False)).order_by(TokenRow.id))
        return {"items": [{"id": str(t.id), "kind": t.kind, "name": t.name,
                           "user": users.get(t.user_id), "node_id": str(t.node_id) if t.node_id else None,
                           "created_at": iso(t.created_at), "expires_at": iso(t.expires_at)}
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
