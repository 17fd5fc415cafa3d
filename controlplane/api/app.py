"""FastAPI app factory: routers, problem+json errors, health/readiness, optional dashboard router."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from sqlalchemy import text

from controlplane.api import problems, routes_admin, routes_agent, routes_jobs, routes_nodes
from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.settings import Settings

log = logging.getLogger("gpupool.api")


def _ready(db: Database) -> tuple[bool, str]:
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if not migrate.is_current(db.engine):
            return False, "database schema is not at the newest migration; run `gpupool db upgrade`"
        return True, ""
    except Exception as err:  # noqa: BLE001
        return False, f"database unreachable: {str(err).splitlines()[0][:200]}"


def build_app(db: Database, settings: Settings, *, loops=None, lifespan=None) -> FastAPI:  # noqa: ANN001
    """The app on an existing database handle (migrated and bootstrapped by the caller)."""
    app = FastAPI(title="gpupool", version="0.1.0", docs_url="/docs", openapi_url="/openapi.json",
                  lifespan=lifespan)
    app.state.db = db
    app.state.settings = settings
    app.state.loops = loops
    problems.install(app)

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"])
    async def readyz() -> JSONResponse:
        ok, why = await run_in_threadpool(_ready, db)
        if ok:
            return JSONResponse({"status": "ready"})
        return problems.problem(503, "Not ready", why)

    for r in (routes_jobs.router, routes_nodes.router, routes_admin.router, routes_agent.router):
        app.include_router(r)
    try:  # the dashboard and metrics live in other packages and are optional
        from controlplane.web import router as web_router  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - a dashboard bug must not take the API down
        log.exception("dashboard router not mounted")
        web_router = None
    if web_router is not None:
        app.include_router(web_router)
    return app
