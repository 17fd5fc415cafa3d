"""FastAPI dependencies: the database handle, settings, and the calling principal (bearer auth).

Routers mounted from other packages (e.g. the dashboard) use these same dependencies.
"""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.concurrency import run_in_threadpool

from controlplane.db.database import Database
from controlplane.services.auth import authenticate, cached_principal
from controlplane.services.principal import Principal, require_admin, require_agent, require_user
from controlplane.services.errors import Unauthorized
from controlplane.settings import Settings


async def get_db(request: Request) -> Database:
    return request.app.state.db


async def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def bearer(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <token>'")
    return token.strip()


async def principal(request: Request) -> Principal:
    """The caller; async (no threadpool hop) when the token is cached, else one DB read."""
    settings: Settings = request.app.state.settings
    db: Database = request.app.state.db
    token = bearer(request)
    who = cached_principal(db, token)
    if who is None:
        who = await run_in_threadpool(authenticate, db, token, settings.auth_cache_s)
    if not who.is_admin:  # per-token budget; admins (operators, benchmarks) are trusted
        request.app.state.rate_limiter.take(token)
    return who


async def user(who: Principal = Depends(principal)) -> Principal:
    return require_user(who)


async def admin(who: Principal = Depends(principal)) -> Principal:
    return require_admin(who)


async def agent(who: Principal = Depends(principal)) -> Principal:
    return require_agent(who)
