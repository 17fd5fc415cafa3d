"""Dashboard sign-in: a user token posted once opens a server-side session (services/sessions.py);
the cookie holds only the session's random id. CSRF: every form and htmx request of a signed-in
page carries the session's token; the sign-in form uses a double-submit cookie (no session yet).
"""

from __future__ import annotations

import secrets
from contextvars import ContextVar

from starlette.requests import Request

from controlplane.services import sessions
from controlplane.services.auth import authenticate
from controlplane.services.errors import Unauthorized
from controlplane.services.principal import Principal, require_user

COOKIE = "gpupool_session"
LOGIN_COOKIE = "gpupool_signin"  # the sign-in form's CSRF token (double submit)
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
_page_csrf: ContextVar[str] = ContextVar("dashboard_csrf", default="")


class SignInRequired(Exception):
    """Raised by pages when there is no valid session; the router redirects to /login."""


def database(request: Request):  # noqa: ANN201
    """The app's Database (the server stores it on app.state)."""
    state = request.app.state
    db = getattr(state, "db", None) or getattr(state, "database", None)
    if db is None:
        raise RuntimeError("the dashboard needs app.state.db (a controlplane.db.database.Database)")
    return db


def _setting(request: Request, name: str, default: float) -> float:
    return float(getattr(getattr(request.app.state, "settings", None), name, default))


def principal_for_token(request: Request, token: str) -> Principal:
    """The user behind ``token`` (agents and bootstrap tokens may not sign in)."""
    who = authenticate(database(request), token.strip(), _setting(request, "auth_cache_s", 2.0))
    require_user(who)
    return who


def current_user(request: Request) -> Principal:
    """The signed-in user of this request's session cookie; SignInRequired when there is none."""
    session_id = request.cookies.get(COOKIE)
    try:
        who = sessions.resolve_session(database(request), session_id,
                                       idle_s=_setting(request, "session_idle_s", 3600.0))
    except Unauthorized:
        raise SignInRequired() from None
    request.state.session_id = session_id
    return who


def use_page_csrf(request: Request) -> None:
    """Make this request's session CSRF token available to the templates (``csrf_token()``)."""
    _page_csrf.set(sessions.csrf_token(request.state.session_id))


def page_csrf() -> str:
    return _page_csrf.get()


def csrf_ok(request: Request, form) -> bool:  # noqa: ANN001
    """True when a POST carries its session's CSRF token (form field, or header for htmx)."""
    presented = form.get(CSRF_FIELD) or request.headers.get(CSRF_HEADER)
    return sessions.csrf_matches(request.state.session_id, presented)


def open_session(request: Request, response, who: Principal) -> None:  # noqa: ANN001
    ttl_s = _setting(request, "session_ttl_s", 12 * 3600.0)
    session_id = sessions.open_session(database(request), who, ttl_s=ttl_s)
    response.set_cookie(COOKIE, session_id, max_age=int(ttl_s), httponly=True, samesite="strict",
                        secure=_https(request), path="/")
    response.delete_cookie(LOGIN_COOKIE, path="/login", secure=_https(request), httponly=True,
                           samesite="strict")


def close_session(request: Request, response) -> None:  # noqa: ANN001
    sessions.close_session(database(request), request.cookies.get(COOKIE))
    forget_session_cookie(request, response)


def forget_session_cookie(request: Request, response) -> None:  # noqa: ANN001
    response.delete_cookie(COOKIE, path="/", secure=_https(request), httponly=True, samesite="strict")


def _https(request: Request) -> bool:
    """Cookies are Secure on https (served directly, or by a trusted TLS-terminating proxy)."""
    return request.url.scheme == "https"


def signin_csrf(request: Request) -> str:
    """The sign-in form's token: the browser's existing one, else a new one (set by remember)."""
    return request.cookies.get(LOGIN_COOKIE) or secrets.token_urlsafe(24)


def remember_signin_csrf(request: Request, response, token: str) -> None:  # noqa: ANN001
    response.set_cookie(LOGIN_COOKIE, token, max_age=3600, httponly=True, samesite="strict",
                        secure=_https(request), path="/login")


def signin_csrf_ok(request: Request, form) -> bool:  # noqa: ANN001
    cookie, presented = request.cookies.get(LOGIN_COOKIE), form.get(CSRF_FIELD)
    return bool(cookie) and bool(presented) and secrets.compare_digest(cookie, str(presented))

