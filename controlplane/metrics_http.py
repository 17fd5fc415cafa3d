"""Request-latency ASGI middleware for the control-plane metrics, labelled by route template."""

from __future__ import annotations

import time


class LatencyMiddleware:
    """Pure ASGI middleware timing each HTTP request, labelled by its route template.

    The template (``/api/v1/jobs/{job_id}``), not the raw path, keeps the label set small;
    requests that match no route are counted under ``route="unmatched"``; /metrics is skipped.
    """

    def __init__(self, app, metrics) -> None:  # noqa: ANN001
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope.get("path") == "/metrics":
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
            self.metrics.observe_request(scope.get("method", "GET"), template, code,
                                         time.perf_counter() - start)
