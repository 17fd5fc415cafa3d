"""Queues and quotas page (usage against guarantee and limit, borrowing, history) and admin pages."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from controlplane import history
from controlplane.services import admin as admin_service
from controlplane.services.errors import Invalid, NotFound
from controlplane.web import queries, render
from controlplane.web.pagekit import dashboard_page, require_admin_page
from controlplane.web.session import database

router = APIRouter(include_in_schema=False)

HISTORY_WINDOW_S = 6 * 3600


@router.get("/queues")
@dashboard_page
def queues(request: Request, who):  # noqa: ANN001
    db = database(request)
    data = queries.overview(db, None if who.is_admin else who.team_id)
    keys = [f"{q['team']}/{q['name']}" for q in data["queues"]]
    charts = history.series(db, "queue", since=time.time() - HISTORY_WINDOW_S, keys=keys)
    total = data["totals"]["milli"]
    return render.page("queues.html", who=who, nav="queues", queues=data["queues"], charts=charts,
                       pool_milli=total, saved=request.query_params.get("saved"))


@router.get("/queues/{team}/{name}/edit")
@dashboard_page
def edit_queue_form(request: Request, who, team: str, name: str):  # noqa: ANN001
    require_admin_page(who)
    db = database(request)
    match = [q for q in queries.overview(db)["queues"] if q["team"] == team and q["name"] == name]
    if not match:
        raise NotFound(f"no queue {team}/{name}")
    return render.page("queue_edit.html", who=who, nav="queues", q=match[0], error=None, form=None)


def _gpus_field(form, field: str, *, optional: bool) -> int | None:  # noqa: ANN001
    """A form value in GPUs ('1.5') -> milli; empty -> None when optional."""
    raw = str(form.get(field) or "").strip()
    if raw == "":
        if optional:
            return None
        raise Invalid(field, "enter a number of GPUs, e.g. 2 or 0.5")
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(field, f"must be a number of GPUs, got {raw!r}") from None
    if not 0 <= value <= 1_000_000:
        raise Invalid(field, "must be between 0 and 1000000 GPUs")
    return int(round(value * 1000))


@router.post("/queues/{team}/{name}")
@dashboard_page
def update_queue(request: Request, who, team: str, name: str):  # noqa: ANN001
    require_admin_page(who)
    form = request.state.form
    db = database(request)
    try:
        body = {"guarantee_milli": _gpus_field(form, "guarantee", optional=False),
                "limit_milli": _gpus_field(form, "limit", optional=True)}
        weight = str(form.get("weight") or "").strip()
        if weight:
            try:
                body["weight"] = float(weight)
            except ValueError:
                raise Invalid("weight", f"must be a number, got {weight!r}") from None
        admin_service.update_queue(db, who, name, team, body)
    except Invalid as err:
        match = [q for q in queries.overview(db)["queues"] if q["team"] == team and q["name"] == name]
        if not match:
            raise
        form_values = {k: str(form.get(k) or "") for k in ("guarantee", "limit", "weight")}
        return render.page("queue_edit.html", 422, who=who, nav="queues", q=match[0], error=err.detail,
                           form=form_values)
    return RedirectResponse(f"/queues?saved={team}/{name}", status_code=303)


@router.get("/admin")
@dashboard_page
def admin(request: Request, who):  # noqa: ANN001
    require_admin_page(who)
    db = database(request)
    users = admin_service.list_users(db, who)["items"]
    tokens = admin_service.list_tokens(db, who)["items"]
    teams = admin_service.list_teams(db, who)["items"]
    return render.page("admin.html", who=who, nav="admin", users=users, tokens=tokens, teams=teams)
