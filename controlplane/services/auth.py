"""Bearer tokens (only sha256 hashes stored), principals, and first-start bootstrap."""

from __future__ import annotations

import hashlib
import re
import secrets
import time

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controlplane.core.states import Role
from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import NodeRow, QueueRow, TeamRow, TokenRow, UserRow
from controlplane.services.errors import Forbidden, Unauthorized
from controlplane.services.events import record
from controlplane.services.principal import Principal

NODE_TOKEN_CACHE_S = 60.0


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_secret(prefix: str) -> str:
    return f"{prefix}_{secrets.token_urlsafe(32)}"


def cached_principal(db: Database, token: str | None) -> Principal | None:
    """The principal for a recently verified token, without touching the database."""
    if not token:
        return None
    hit = db.cache.get(("tok", hash_token(token)))
    if hit and hit[1] > time.monotonic():
        return hit[0]
    return None


def authenticate(db: Database, token: str | None, cache_s: float = 2.0) -> Principal:
    """The principal behind a bearer token; 401 when missing, unknown, revoked, expired or its
    user is disabled."""
    if not token:
        raise Unauthorized("missing bearer token: send 'Authorization: Bearer <token>'")
    digest = hash_token(token)
    hit = db.cache.get(("tok", digest))
    if hit and hit[1] > time.monotonic():
        return hit[0]
    with db.read() as s:
        tok = s.scalar(select(TokenRow).where(TokenRow.token_hash == digest))
        if tok is None or tok.revoked:
            raise Unauthorized("invalid or revoked token")
        left_s = None if tok.expires_at is None else tok.expires_at - now()
        if left_s is not None and left_s <= 0:
            raise Unauthorized("token expired")
        principal = _principal(s, tok)
    # node tokens are presented every few seconds by each of possibly thousands of agents:
    # trust them longer (revocation is immediate on this replica, NODE_TOKEN_CACHE_S elsewhere)
    ttl = max(cache_s, NODE_TOKEN_CACHE_S) if principal.role == Role.AGENT else cache_s
    ttl = ttl if left_s is None else min(ttl, left_s)  # never trusted past its expiry
    if len(db.cache) > 200_000:  # bounded: forget everything rather than grow without end
        db.cache.clear()
    db.cache[("tok", digest)] = (principal, time.monotonic() + ttl)
    return principal


def remember_token(db: Database, token: str, principal: Principal) -> None:
    """Cache a token this replica just issued (saves each new agent's first DB lookup)."""
    ttl = NODE_TOKEN_CACHE_S if principal.role == Role.AGENT else 2.0
    db.cache[("tok", hash_token(token))] = (principal, time.monotonic() + ttl)


def forget_cached_tokens(db: Database) -> None:
    for key in [k for k in list(db.cache) if k[0] == "tok"]:
        db.cache.pop(key, None)


def _principal(s, tok: TokenRow) -> Principal:  # noqa: ANN001
    if tok.kind == "node":
        node = s.get(NodeRow, tok.node_id)
        return Principal(Role.AGENT, tok.id, node_id=node.id, node=node.name)
    if tok.kind == "bootstrap":
        if tok.single_use and tok.used_at is not None:
            raise Unauthorized(f"bootstrap token {tok.id} was single use and is used up")
        return Principal(Role.BOOTSTRAP, tok.id)
    user = s.get(UserRow, tok.user_id)
    if user.disabled:
        raise Unauthorized(f"user {user.name!r} is disabled")
    team = s.get(TeamRow, user.team_id)
    return Principal(Role(user.role), tok.id, user_id=user.id, user=user.name,
                     team_id=team.id, team=team.name)


def bootstrap_state(t: TokenRow, ts: float) -> str:
    """active | used | expired | revoked."""
    if t.revoked:
        return "revoked"
    if t.single_use and t.used_at is not None:
        return "used"
    if t.expires_at is not None and t.expires_at <= ts:
        return "expired"
    return "active"


def use_bootstrap_token(s, who: Principal, hostname: str, *, consume: bool) -> None:  # noqa: ANN001
    """Check a bootstrap token may register ``hostname`` (401 used up or expired, 403 outside its
    name pattern); ``consume``: record the use (a single-use token is then used up)."""
    tok = s.scalar(select(TokenRow).where(TokenRow.id == who.token_id).with_for_update())
    state = bootstrap_state(tok, now()) if tok is not None else "revoked"
    if state != "active":
        raise Unauthorized(f"bootstrap token {who.token_id} is {state}; ask an admin for a new one "
                           "(gpupool admin bootstrap-token create)")
    if tok.name_pattern and re.fullmatch(tok.name_pattern, hostname) is None:
        raise Forbidden(f"bootstrap token {tok.id} registers only nodes whose names match "
                        f"{tok.name_pattern!r}; {hostname!r} does not")
    if consume and tok.used_at is None:
        tok.used_at = now()


def bootstrap(db: Database, *, admin_token: str | None = None,
              bootstrap_token: str | None = None) -> str | None:
    """On an empty database create team+queue "default" and user "admin"; return its new token.

    Returns None when the database was already bootstrapped (the token is only shown once).
    Also registers the configured agent bootstrap token. Safe when replicas race.
    """
    if bootstrap_token:
        _ensure_token(db, bootstrap_token, kind="bootstrap", name="settings bootstrap token")
    with db.read() as s:
        already = s.scalar(select(TeamRow.id).limit(1)) is not None
    if already:  # outside the read: SQLite allows one writer, and this read holds a lock
        if admin_token:
            _ensure_admin_token(db, admin_token)
        return None
    token = admin_token or new_secret("gpa")
    try:
        with db.tx() as s:
            ts = now()
            team = TeamRow(name="default", created_at=ts)
            s.add(team)
            s.flush()
            s.add(QueueRow(name="default", team_id=team.id, created_at=ts))
            user = UserRow(name="admin", team_id=team.id, role="admin", created_at=ts)
            s.add(user)
            s.flush()
            s.add(TokenRow(token_hash=hash_token(token), kind="user", name="bootstrap admin",
                           user_id=user.id, created_at=ts))
            record(s, "bootstrap", "team", "default", "system",
                   reason="first start: created team, queue and admin user")
    except IntegrityError:  # another replica bootstrapped at the same moment
        if admin_token:
            _ensure_admin_token(db, admin_token)
        return None
    return token


def _ensure_admin_token(db: Database, token: str) -> None:
    with db.read() as s:
        admin = s.scalar(select(UserRow).where(UserRow.name == "admin"))
    if admin is not None:
        _ensure_token(db, token, kind="user", name="configured admin token", user_id=admin.id)


def _ensure_token(db: Database, token: str, **fields) -> None:  # noqa: ANN003
    digest = hash_token(token)
    with db.read() as s:
        if s.scalar(select(TokenRow.id).where(TokenRow.token_hash == digest)) is not None:
            return
    try:
        with db.tx() as s:
            s.add(TokenRow(token_hash=digest, created_at=now(), **fields))
    except IntegrityError:
        pass
