"""Dashboard sign-in: an API token posted once, kept in an httponly cookie, checked on each page."""

from __future__ import annotations

from starlette.requests import Request

from controlplane.services.auth import authenticate
from controlplane.services.principal import Principal, require_user
from controlplane.services.errors import Forbidden, ServiceError

COOKIE = "gpupool_session"
MAX_AGE_S = 12 * 3600


class SignInRequired(Exception):
    """Raised by pages when there is no valid session; the router redirects to /login."""


def database(request: Request):  # noqa: ANN201
    """The app's Database (the server stores it on app.state)."""
    state = request.app.state
    db = getattr(state, "db", None) or getattr(state, "database", None)
    if db is None:
        raise RuntimeError("the dashboard needs app.state.db (a controlplane.db.database.Database)")
    return db


def _cache_s(request: Request) -> float:
    settings = getattr(request.app.state, "settings", None)
    return float(getattr(settings, "auth_cache_s", 2.0))


def principal_for_token(request: Request, token: str) -> Principal:
    """The user behind ``token`` (agents and bootstrap tokens may not sign in)."""
    who = authenticate(database(request), token.strip(), _cache_s(request))
    require_user(who)
    return who


def current_user(request: Request) -> Principal:
    token = request.cookies.get(COOKIE)
    if not token:
        raise SignInRequired()
    try:
        return principal_for_token(request, token)
    except ServiceError as err:
        if isinstance(err, Forbidden):
            raise
        raise SignInRequired() from None


def set_session(response, token: str, secure: bool) -> None:  # noqa: ANN001
    response.set_cookie(COOKIE, token.strip(), max_age=MAX_AGE_S, httponly=True, samesite="strict",
                        secure=secure, path="/")


def clear_session(response) -> None:  # noqa: ANN001
    response.delete_cookie(COOKIE, path="/")
