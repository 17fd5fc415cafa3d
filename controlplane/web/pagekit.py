"""How a dashboard page runs: sign-in redirect, friendly error pages, database work off the loop."""

from __future__ import annotations

import functools
import inspect
from urllib.parse import quote

from fastapi import Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from controlplane.services.errors import Forbidden, ServiceError
from controlplane.web import render, session


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
