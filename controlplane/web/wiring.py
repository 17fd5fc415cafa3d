"""How the dashboard hooks into the server app without the server knowing its internals.

The web router carries a lifespan (FastAPI merges a router's lifespan into the app's) that:
1. gives the app its metrics (``controlplane.metrics.install`` when the server did not already),
   timing requests by wrapping the built middleware stack (middleware can no longer be added
   once the app has started);
2. wraps the scheduling loops' ``cycle`` to record cycle duration, placements and preemptions;
3. starts the usage-history loop when the server runs its loops (settings.run_loops).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from contextlib import asynccontextmanager

from controlplane.metrics import ControlPlaneMetrics, metrics_of

log = logging.getLogger("gpupool.web")


def ensure_metrics(app) -> ControlPlaneMetrics:  # noqa: ANN001
    """The app's metrics, created on first use (bound to app.state.db)."""
    metrics = metrics_of(app)
    if metrics is None:
        metrics = ControlPlaneMetrics(getattr(app.state, "db", None))
        app.state.metrics = metrics
    return metrics


def _wrap_requests(app, metrics: ControlPlaneMetrics) -> None:  # noqa: ANN001
    from controlplane.metrics_http import LatencyMiddleware

    if getattr(app.state, "metrics_middleware", False):
        return
    if app.middleware_stack is None:
        app.middleware_stack = app.build_middleware_stack()
    app.middleware_stack = LatencyMiddleware(app.middleware_stack, metrics=metrics)
    app.state.metrics_middleware = True


def _wrap_cycle(app, metrics: ControlPlaneMetrics) -> None:  # noqa: ANN001
    loops = getattr(app.state, "loops", None)
    if loops is None or getattr(loops, "_metrics_wrapped", False) or not hasattr(loops, "cycle"):
        return
    original = loops.cycle

    def timed_cycle(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        start = time.perf_counter()
        result = original(*args, **kwargs)
        info = result if isinstance(result, dict) else {}
        metrics.observe_cycle(time.perf_counter() - start, int(info.get("placed", 0) or 0),
                              int(info.get("preempted", 0) or 0), info.get("pending"))
        return result

    loops.cycle = timed_cycle
    loops._metrics_wrapped = True


@asynccontextmanager
async def web_lifespan(app):  # noqa: ANN001, ANN201
    task = None
    try:
        metrics = ensure_metrics(app)
        _wrap_requests(app, metrics)
        _wrap_cycle(app, metrics)
        settings = getattr(app.state, "settings", None)
        if getattr(settings, "run_loops", False) and getattr(app.state, "db", None) is not None:
            from controlplane.loops.history import start_history_loop

            task = start_history_loop(app.state.db)
    except Exception:  # noqa: BLE001 - monitoring must never stop the API from serving
        log.exception("dashboard/metrics wiring failed")
    try:
        yield
    finally:
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
