"""RFC 9457 problem+json for every error: service errors, validation, unknown routes, crashes."""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from controlplane.schemas.problems import PROBLEM_MEDIA, Problem
from controlplane.services.errors import ServiceError, TooManyRequests

log = logging.getLogger("gpupool.api")
MEDIA = PROBLEM_MEDIA


def problem(status: int, title: str, detail: str, errors: list[dict] | None = None,
            headers: dict | None = None) -> JSONResponse:
    """A ``schemas.Problem`` answer (``errors`` only when there are field errors)."""
    body = Problem.model_validate({"title": title, "status": status, "detail": detail,
                                   "errors": errors or None})
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, media_type=MEDIA,
                        headers=headers)


def _field(loc: tuple) -> str:
    parts = [str(x) for x in loc]
    if parts and parts[0] in ("body", "query", "path", "header"):
        where, parts = parts[0], parts[1:]
        if not parts:
            return where
    return ".".join(parts)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(max(1, math.ceil(exc.retry_after_s)))}
        return problem(exc.status, exc.title, exc.detail, exc.errors, headers)

    @app.exception_handler(OperationalError)
    @app.exception_handler(InterfaceError)
    async def _database(request: Request, exc: DBAPIError) -> JSONResponse:
        # the database is down or failing over: a retryable 503, not a crash (agents keep their
        # reports buffered and retry; clients see Retry-After)
        log.warning("database error on %s %s: %s", request.method, request.url.path,
                    str(exc.orig or exc).splitlines()[0][:200])
        return problem(503, "Service unavailable", "the database is unavailable; retry shortly",
                       headers={"Retry-After": "5"})

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = []
        for e in exc.errors():
            msg, field = e.get("msg", "invalid"), _field(tuple(e.get("loc", ())))
            if e.get("type") == "json_invalid":
                msg = f"malformed JSON: {e.get('ctx', {}).get('error', 'cannot parse')}"
                field = "body"
            errors.append({"field": field, "message": msg})
        detail = "; ".join(f"{x['field']}: {x['message']}" for x in errors) or "invalid request"
        return problem(422, "Invalid input", detail, errors)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400:  # FastAPI could not decode the body (e.g. not UTF-8): bad input
            message = "malformed request body: not JSON text in UTF-8"
            return problem(422, "Invalid input", f"body: {message}", [{"field": "body", "message": message}])
        titles = {404: "Not found", 405: "Method not allowed", 401: "Unauthorized"}
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return problem(exc.status_code, titles.get(exc.status_code, "Error"), detail)

    app.add_middleware(CrashToProblem)


class CrashToProblem:
    """Pure ASGI middleware: an unexpected exception becomes a 500 problem (logged, no traceback
    to the client) and the connection stays usable."""

    def __init__(self, app):  # noqa: ANN001
        self.app = app

    async def __call__(self, scope, receive, send):  # noqa: ANN001
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):  # noqa: ANN001
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if started:
                raise
            resp = problem(500, "Internal error",
                           "the server hit an unexpected error; see the server log for details")
            await resp(scope, receive, send)
