"""FastAPI dependencies: the database handle, settings, and the calling principal (bearer auth).

Routers mounted from other packages (e.g. the dashboard) use these same dependencies.
"""

from __future__ import annotations

from fastapi import Depends, Request

from controlplane.db.database import Database
from controlplane.services.auth import (Principal, authenticate, require_admin, require_agent,
                                        require_user)
from controlplane.services.errors import Unauthorized
from controlplane.settings import Settings


def get_db(request: Request) -> Database:
    return request.app.state.db


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


def principal(request: Request) -> Principal:
    settings: Settings = request.app.state.settings
    return authenticate(request.app.state.db, bearer(request), settings.auth_cache_s)


def user(who: Principal = Depends(principal)) -> Principal:
    return require_user(who)


def admin(who: Principal = Depends(principal)) -> Principal:
    return require_admin(who)


def agent(who: Principal = Depends(principal)) -> Principal:
    return require_agent(who)
