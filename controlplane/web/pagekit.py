"""How a dashboard page runs: sign-in redirect, CSRF check of writes, friendly error pages, and
database work off the event loop."""

from __future__ import annotations

import functools
import inspect
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from controlplane.services.errors import Forbidden, ServiceError
from controlplane.web import render, session

CSRF_REFUSED = ("This form did not come from this dashboard page, or your session changed since "
                "the page was loaded. Go back, reload the page and try again.")


def dashboard_page(fn):  # noqa: ANN001, ANN201
    """Wrap a page: sign-in redirect, CSRF on POST, 403/404/422 as pages, DB work off the loop."""

    @functools.wraps(fn)
    async def wrapper(request: Request, **kwargs):  # noqa: ANN003, ANN202
        try:
            who = await run_in_threadpool(session.current_user, request)
        except session.SignInRequired:
            return _to_sign_in(request)
        session.use_page_csrf(request)
        if request.method == "POST":
            form = await request.form()
            if not session.csrf_ok(request, form):
                return render.page("error.html", 403, title="Form expired", detail=CSRF_REFUSED,
                                   who=who)
            request.state.form = form
        try:
            return await run_in_threadpool(functools.partial(fn, request, who, **kwargs))
        except ServiceError as err:
            return render.page("error.html", err.status, title=err.title, detail=err.detail, who=who,
                               nav="")

    sig = inspect.signature(fn)  # FastAPI sees (request, path params...), never ``who``
    wrapper.__signature__ = sig.replace(parameters=[p for p in sig.parameters.values() if p.name != "who"])
    return wrapper


def _to_sign_in(request: Request) -> Response:
    """To the sign-in page, back here afterwards; htmx requests get a full-page redirect."""
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    location = f"/login?next={quote(target)}"
    if request.headers.get("hx-request"):
        return Response(status_code=204, headers={"HX-Redirect": location})
    return RedirectResponse(location, status_code=303)


def require_admin_page(who) -> None:  # noqa: ANN001
    if not who.is_admin:
        raise Forbidden("this page is for administrators; ask an admin of your gpupool")
