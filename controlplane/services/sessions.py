"""Dashboard sessions: random ids kept server-side (only their sha256), expiring, revoked on sign-out.

A session is valid while it is not revoked, before its absolute expiry, seen within the idle
timeout, and while the token it was opened with is valid and its user enabled, so revoking a
token or disabling a user ends that user's dashboard sessions at their next request. Each
session has its CSRF token, derived from its secret id (never stored, never the id itself).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from sqlalchemy import delete, select, update

from controlplane.core.states import Role
from controlplane.db.base import now
from controlplane.db.database import Database
from controlplane.db.models import DashboardSessionRow, TeamRow, TokenRow, UserRow
from controlplane.services import events
from controlplane.services.errors import Unauthorized
from controlplane.services.principal import Principal, require_user

TOUCH_EVERY_S = 60.0  # last_seen_at is written at most this often per session
KEEP_EXPIRED_S = 86400.0  # expired rows are deleted (at the next sign-in) after a day


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def csrf_token(session_id: str) -> str:
    """The session's CSRF token: an HMAC of a constant keyed by the secret session id."""
    return hmac.new(session_id.encode(), b"gpupool dashboard csrf v1", hashlib.sha256).hexdigest()


def csrf_matches(session_id: str, presented: str | None) -> bool:
    return bool(presented) and hmac.compare_digest(csrf_token(session_id), str(presented))


def open_session(db: Database, who: Principal, *, ttl_s: float) -> str:
    """A new session for a user signed in with a token; returns its id (for the cookie only)."""
    require_user(who)
    session_id = secrets.token_urlsafe(32)
    ts = now()
    with db.tx() as s:
        s.execute(delete(DashboardSessionRow).where(DashboardSessionRow.expires_at < ts - KEEP_EXPIRED_S))
        s.add(DashboardSessionRow(session_hash=_digest(session_id), user_id=who.user_id,
                                  token_id=who.token_id, created_at=ts, expires_at=ts + ttl_s,
                                  last_seen_at=ts))
        events.record(s, "dashboard_signed_in", "user", who.user, who.actor,
                      data={"token_id": str(who.token_id)})
    return session_id


def resolve_session(db: Database, session_id: str | None, *, idle_s: float) -> Principal:
    """The user of a live session; Unauthorized saying why it is not (one indexed join)."""
    if not session_id:
        raise Unauthorized("not signed in")
    ts = now()
    q = (select(DashboardSessionRow, TokenRow, UserRow, TeamRow)
         .join(TokenRow, TokenRow.id == DashboardSessionRow.token_id)
         .join(UserRow, UserRow.id == DashboardSessionRow.user_id)
         .join(TeamRow, TeamRow.id == UserRow.team_id)
         .where(DashboardSessionRow.session_hash == _digest(session_id)))
    with db.read() as s:
        row = s.execute(q).first()
    if row is None:
        raise Unauthorized("unknown session")
    sess, tok, user, team = row
    if sess.revoked:
        raise Unauthorized("signed out")
    if sess.expires_at <= ts:
        raise Unauthorized("session expired")
    if ts - sess.last_seen_at > idle_s:
        raise Unauthorized("session idle for too long")
    if tok.revoked or (tok.expires_at is not None and tok.expires_at <= ts):
        raise Unauthorized("the token this session was opened with is revoked or expired")
    if user.disabled:
        raise Unauthorized(f"user {user.name!r} is disabled")
    if ts - sess.last_seen_at >= min(TOUCH_EVERY_S, idle_s / 10):
        with db.tx() as s:
            s.execute(update(DashboardSessionRow).where(DashboardSessionRow.id == sess.id,
                                                        DashboardSessionRow.last_seen_at < ts)
                      .values(last_seen_at=ts))
    return Principal(Role(user.role), tok.id, user_id=user.id, user=user.name, team_id=team.id,
                     team=team.name)


def close_session(db: Database, session_id: str | None) -> bool:
    """Revoke a session (sign-out); False when there was no live one."""
    if not session_id:
        return False
    with db.tx() as s:
        sess = s.scalar(select(DashboardSessionRow).where(
            DashboardSessionRow.session_hash == _digest(session_id),
            DashboardSessionRow.revoked.is_(False)))
        if sess is None:
            return False
        sess.revoked = True
        user = s.get(UserRow, sess.user_id)
        events.record(s, "dashboard_signed_out", "user", user.name, f"user:{user.name}")
    return True
