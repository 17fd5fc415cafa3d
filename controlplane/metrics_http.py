"""HTTP side of the control-plane metrics: latency middleware (route templates) and GET /metrics."""

from __future__ import annotations

import time

from starlette.requests import Request
from starlette.responses import Response

from controlplane.metrics import CONTENT_TYPE_LATEST


class LatencyMiddleware:
    """Pure ASGI middleware timing each HTTP request, labelled by its route template.

    The template (``/api/v1/jobs/{job_id}``), not the raw path, keeps the label set small;
    requests that match no route are counted under ``route="unmatched"``.
    """

    def __init__(self, app, metrics) -> None:  # noqa: ANN001
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        start = time.perf_counter()
        code = 500

        async def send_wrapper(message) -> None:  # noqa: ANN001
            nonlocal code
            if message["type"] == "http.response.start":
                code = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            template = getattr(route, "path_format", None) or getattr(route, "path", None) or "unmatched"
            if scope.get("path") != "/metrics":
                self.metrics.observe_request(scope.get("method", "GET"), template, code,
                                             time.perf_counter() - start)


def add_metrics_route(app) -> None:  # noqa: ANN001
    """GET /metrics (no auth), rendered from the app's own registry off the event loop."""
    from starlette.concurrency import run_in_threadpool

    async def metrics_endpoint(request: Request) -> Response:
        body = await run_in_threadpool(request.app.state.metrics.render)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    app.add_route("/metrics", metrics_endpoint, methods=["GET"], include_in_schema=False)
