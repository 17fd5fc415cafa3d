"""Who may join and who may sign in: bootstrap tokens for agents (expiry, single use, node-name
pattern) and disabling users (their tokens stop working and their dashboard sessions end)."""

from __future__ import annotations

from sqlalchemy import select, update

from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import DashboardSessionRow, TeamRow, TokenRow, UserRow
from controlplane.schemas import BootstrapTokenCreate
from controlplane.services import events
from controlplane.services.admin import user_dict, validated
from controlplane.services.auth import bootstrap_state, forget_cached_tokens, hash_token, new_secret
from controlplane.services.errors import Conflict, NotFound
from controlplane.services.principal import Principal, require_admin
from controlplane.services.serialize import iso, parse_id


def create_bootstrap_token(db: Database, who: Principal, body: BootstrapTokenCreate | dict | None = None) -> dict:
    require_admin(who)
    req = validated(BootstrapTokenCreate, body or {})
    expires_at = now() + float(req.expires_in_s) if req.expires_in_s is not None else None
    secret = new_secret("gpb")
    with db.tx() as s:
        tok = TokenRow(token_hash=hash_token(secret), kind="bootstrap", name=req.name, created_at=now(),
                       expires_at=expires_at, single_use=req.single_use, name_pattern=req.name_pattern)
        s.add(tok)
        s.flush()
        rules = {"expires_at": iso(expires_at), "single_use": req.single_use, "name_pattern": req.name_pattern}
        events.record(s, "bootstrap_token_created", "token", tok.id, who.actor, data={"name": req.name, **rules})
        return {"id": str(tok.id), "token": secret, "name": req.name, **rules}


def _bootstrap_dict(t: TokenRow, ts: float) -> dict:
    return {"id": str(t.id), "name": t.name, "created_at": iso(t.created_at), "expires_at": iso(t.expires_at),
            "single_use": bool(t.single_use), "name_pattern": t.name_pattern, "used_at": iso(t.used_at),
            "state": bootstrap_state(t, ts)}


def list_bootstrap_tokens(db: Database, who: Principal) -> dict:
    """Every bootstrap token with its state (active, used, expired, revoked), newest first."""
    require_admin(who)
    ts = now()
    with db.read() as s:
        rows = s.scalars(select(TokenRow).where(TokenRow.kind == "bootstrap").order_by(TokenRow.id.desc()))
        return {"items": [_bootstrap_dict(t, ts) for t in rows]}


def revoke_bootstrap_token(db: Database, who: Principal, token_id: str) -> dict:
    require_admin(who)
    tid = parse_id(token_id, "bootstrap token")
    with db.tx() as s:
        res = s.execute(update(TokenRow).where(TokenRow.id == tid, TokenRow.kind == "bootstrap",
                                               TokenRow.revoked.is_(False)).values(revoked=True))
        if res.rowcount != 1:
            raise NotFound(f"no active bootstrap token with id {token_id!r}; see GET /api/v1/bootstrap-tokens")
        events.record(s, "token_revoked", "token", tid, who.actor, data={"kind": "bootstrap"})
    forget_cached_tokens(db)
    return {"id": str(tid), "revoked": True}


def set_user_disabled(db: Database, who: Principal, name: str, *, disabled: bool) -> dict:
    """Disable (tokens refused, dashboard sessions revoked) or enable a user; never yourself."""
    require_admin(who)
    with db.tx() as s:
        user = s.scalar(select(UserRow).where(UserRow.name == name).with_for_update())
        if user is None:
            raise NotFound(f"no user named {name!r}; see GET /api/v1/users")
        if disabled and user.id == who.user_id:
            raise Conflict("you cannot disable yourself; ask another admin")
        changed = bool(user.disabled) != disabled
        user.disabled = disabled
        ended = 0
        if disabled:
            ended = s.execute(update(DashboardSessionRow).where(
                DashboardSessionRow.user_id == user.id, DashboardSessionRow.revoked.is_(False))
                .values(revoked=True)).rowcount
        if changed:
            events.record(s, "user_disabled" if disabled else "user_enabled", "user", name, who.actor,
                          team_id=user.team_id, data={"sessions_revoked": ended} if disabled else None)
        team = s.scalar(select(TeamRow.name).where(TeamRow.id == user.team_id))
        out = user_dict(user, team)
    forget_cached_tokens(db)  # this replica refuses the user's tokens at once (others within seconds)
    return out
