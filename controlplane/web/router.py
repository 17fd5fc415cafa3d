"""The dashboard's FastAPI router: sign-in, Overview, Nodes, Jobs, Queues, Events, static assets.

Pages are server-rendered (Jinja2) and call the same services as the REST API with the signed-in
user's principal, so members see exactly what the API would show them. Writes are POST forms
(SameSite=strict cookie) that redirect back (or answer an htmx fragment).
"""

from __future__ import annotations

import functools
import inspect
import mimetypes
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from controlplane.services.errors import Forbidden, ServiceError
from controlplane.web import render, session
from controlplane.web.wiring import ensure_metrics, web_lifespan

router = APIRouter(include_in_schema=False, lifespan=web_lifespan)


def dashboard_page(fn):  # noqa: ANN001, ANN201
    """Wrap a page: sign-in redirect, 403/404/422 as friendly pages, DB work off the event loop."""

    @functools.wraps(fn)
    async def wrapper(request: Request, **kwargs):  # noqa: ANN003, ANN202
        try:
            who = await run_in_threadpool(session.current_user, request)
        except session.SignInRequired:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        except Forbidden as err:
            return render.page("error.html", 403, title="Forbidden", detail=err.detail, who=None)
        if request.method == "POST":
            request.state.form = await request.form()
        try:
            return await run_in_threadpool(functools.partial(fn, request, who, **kwargs))
        except ServiceError as err:
            return render.page("error.html", err.status, title=err.title, detail=err.detail, who=who,
                               nav="")

    sig = inspect.signature(fn)  # FastAPI sees (request, path params...), never ``who``
    wrapper.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "who"])
    return wrapper


def require_admin_page(who) -> None:  # noqa: ANN001
    if not who.is_admin:
        raise Forbidden("this page is for administrators; ask an admin of your gpupool")


# --- sign in ---------------------------------------------------------------------------------
@router.get("/login")
async def login_form(request: Request, next: str = "/"):  # noqa: A002
    return render.page("login.html", next=_safe_next(next), error=None, who=None)


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    token = str(form.get("token") or "").strip()
    target = _safe_next(str(form.get("next") or "/"))
    if not token:
        return render.page("login.html", 422, next=target, error="Paste an API token to sign in.",
                           who=None)
    try:
        await run_in_threadpool(session.principal_for_token, request, token)
    except Forbidden:
        return render.page("login.html", 403, next=target, who=None,
                           error="That token belongs to an agent, not a user; use a user token.")
    except ServiceError:
        return render.page("login.html", 401, next=target, who=None,
                           error="That token is not valid (unknown or revoked).")
    response = RedirectResponse(target, status_code=303)
    session.set_session(response, token, secure=request.url.scheme == "https")
    return response


@router.post("/logout")
async def logout(request: Request):
    response = RedirectResponse("/login", status_code=303)
    session.clear_session(response)
    return response


def _safe_next(target: str) -> str:
    """Only same-site paths (no open redirect)."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


# --- metrics ---------------------------------------------------------------------------------
@router.get("/metrics")
async def metrics(request: Request):
    """Prometheus exposition of the control plane (no auth, like most exporters)."""
    from controlplane.metrics import CONTENT_TYPE_LATEST

    body = await run_in_threadpool(ensure_metrics(request.app).render)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


# --- static assets ---------------------------------------------------------------------------
@router.get("/static/{path:path}")
async def static(path: str):
    base = render.STATIC.resolve()
    file = (base / path).resolve()
    if base not in file.parents or not file.is_file():
        return Response("not found", status_code=404, media_type="text/plain")
    media = mimetypes.guess_type(file.name)[0] or "application/octet-stream"
    return FileResponse(file, media_type=media, headers={"Cache-Control": "public, max-age=3600"})


from controlplane.web import pages  # noqa: E402,F401  (registers the page routes on router)
