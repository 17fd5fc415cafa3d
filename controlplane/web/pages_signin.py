"""Sign-in and sign-out pages (a user token in, a session cookie out)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from controlplane.services.errors import Forbidden, ServiceError
from controlplane.web import render, session

router = APIRouter(include_in_schema=False)


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
