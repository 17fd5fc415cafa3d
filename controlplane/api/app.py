"""FastAPI app factory: routers, problem+json errors, health/readiness, metrics, the dashboard.

Everything the app needs is handed in (database, settings, metrics, loops) and installed here,
before the app starts: nothing is patched in later.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text

from controlplane.api import (problems, routes_admin, routes_agent, routes_controls, routes_jobs,
                              routes_nodes, routes_usage)
from controlplane.api.limits import BodyLimit, RateLimiter, Slots
from controlplane.db import migrate
from controlplane.db.database import Database
from controlplane.loops.runner import Loops
from controlplane.metrics import CONTENT_TYPE_LATEST, ControlPlaneMetrics
from controlplane.metrics_http import LatencyMiddleware
from controlplane.schemas import Health, problem_responses
from controlplane.settings import Settings
from controlplane.web.router import dashboard_router


def _ready(db: Database) -> tuple[bool, str]:
    try:
        with db.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        if not migrate.is_current(db.engine):
            return False, "database schema is not at the newest migration; run `gpupool db upgrade`"
        return True, ""
    except Exception as err:  # noqa: BLE001
        return False, f"database unreachable: {str(err).splitlines()[0][:200]}"


def build_app(db: Database, settings: Settings, *, metrics: ControlPlaneMetrics | None = None,
              loops: Loops | None = None, lifespan=None) -> FastAPI:  # noqa: ANN001
    """The app on an existing database handle (migrated and bootstrapped by the caller)."""
    app = FastAPI(title="gpupool", version="0.1.0", docs_url="/docs", openapi_url="/openapi.json",
                  lifespan=lifespan)
    metrics = metrics or ControlPlaneMetrics(db)
    app.state.db = db
    app.state.settings = settings
    app.state.metrics = metrics
    app.state.loops = loops
    # a submit wakes the scheduling loop, so an idle pool places a job at once
    app.state.kick_scheduler = loops.kick if loops is not None else (lambda: None)
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_s, settings.rate_limit_burst)
    app.state.log_followers = Slots(settings.max_log_followers, "log followers")
    problems.install(app)
    app.add_middleware(LatencyMiddleware, metrics=metrics)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)  # outermost: before any parsing

    @app.get("/healthz", tags=["health"], response_model=Health)
    def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz", tags=["health"], response_model=Health, responses=problem_responses(503))
    async def readyz() -> JSONResponse:
        ok, why = await run_in_threadpool(_ready, db)
        if ok:
            return JSONResponse({"status": "ready"})
        return problems.problem(503, "Not ready", why)

    @app.get("/metrics", include_in_schema=False)
    async def prometheus_metrics(request: Request) -> Response:
        """Prometheus exposition of the control plane (no auth, like most exporters)."""
        body = await run_in_threadpool(request.app.state.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    for r in (routes_jobs.router, routes_nodes.router, routes_admin.router, routes_controls.router,
              routes_agent.router, routes_usage.router):
        app.include_router(r)
    app.include_router(dashboard_router())
    return app
