"""Sign-in and sign-out pages (a user token in once, a server-side session cookie out)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from controlplane.services.errors import Forbidden, ServiceError
from controlplane.web import render, session
from controlplane.web.pagekit import CSRF_REFUSED

router = APIRouter(include_in_schema=False)


def _form_page(request: Request, status: int, next_: str, error: str | None):  # noqa: ANN202
    """The sign-in form, with its CSRF token (also kept in a SameSite=Strict cookie)."""
    token = session.signin_csrf(request)
    response = render.page("login.html", status, next=next_, error=error, who=None, login_csrf=token)
    session.remember_signin_csrf(request, response, token)
    return response


@router.get("/login")
async def login_form(request: Request, next: str = "/"):  # noqa: A002
    return _form_page(request, 200, _safe_next(next), None)


@router.post("/login")
async def login(request: Request):
    form = await request.form()
    target = _safe_next(str(form.get("next") or "/"))
    if not session.signin_csrf_ok(request, form):
        return _form_page(request, 403, target, "This sign-in form expired; paste your token again.")
    token = str(form.get("token") or "").strip()
    if not token:
        return _form_page(request, 422, target, "Paste an API token to sign in.")
    try:
        who = await run_in_threadpool(session.principal_for_token, request, token)
    except Forbidden:
        return _form_page(request, 403, target,
                          "That token belongs to an agent, not a user; use a user token.")
    except ServiceError as err:
        why = "it has expired" if "expired" in err.detail else "unknown or revoked"
        return _form_page(request, 401, target, f"That token is not valid ({why}).")
    response = RedirectResponse(target, status_code=303)
    await run_in_threadpool(session.open_session, request, response, who)
    return response


@router.post("/logout")
async def logout(request: Request):
    form = await request.form()
    response = RedirectResponse("/login", status_code=303)
    try:
        await run_in_threadpool(session.current_user, request)
    except session.SignInRequired:  # nothing to revoke: just drop the cookie
        session.forget_session_cookie(request, response)
        return response
    if not session.csrf_ok(request, form):
        return render.page("error.html", 403, title="Form expired", detail=CSRF_REFUSED, who=None)
    await run_in_threadpool(session.close_session, request, response)
    return response


def _safe_next(target: str) -> str:
    """Only same-site paths (no open redirect: '//host' and '/\\host' are other sites to browsers)."""
    ok = target.startswith("/") and not target.startswith("//") and "\\" not in target
    return target if ok and target.isprintable() else "/"
