"""Queues and quotas page (usage against guarantee and limit, borrowing, history) and admin pages."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from controlplane import history
from controlplane.services import admin as admin_service
from controlplane.services import scheduler_settings
from controlplane.services.errors import Invalid, NotFound
from controlplane.web import queries, render
from controlplane.web.pagekit import dashboard_page, require_admin_page
from controlplane.web.session import database
from workloads.specs import PRIORITY_CLASSES

router = APIRouter(include_in_schema=False)

HISTORY_WINDOW_S = 6 * 3600
FORM_FIELDS = ("guarantee", "limit", "weight", "max_priority", "max_min_runtime_s", "max_pending_jobs",
               "model_guarantees", "memory_guarantee", "memory_limit")


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
    return render.page("queue_edit.html", who=who, nav="queues", q=match[0], error=None,
                       form=policy_form(_queue(db, who, team, name)))


def _queue(db, who, team: str, name: str) -> dict:  # noqa: ANN001
    return next(q for q in admin_service.list_queues(db, who)["items"] if q["team"] == team and q["name"] == name)


def policy_form(q: dict) -> dict:
    """A queue's policy and quotas beyond compute as the edit form's text fields."""
    def text(v) -> str:  # noqa: ANN001
        return "" if v is None else f"{v:g}" if isinstance(v, float) else str(v)

    return {"guarantee": render.gpus(q["guarantee_milli"]),
            "limit": "" if q["limit_milli"] is None else render.gpus(q["limit_milli"]),
            "weight": f"{q['weight']:g}", "max_priority": text(q["max_priority"]),
            "allow_non_preemptible": q["allow_non_preemptible"], "max_min_runtime_s": text(q["max_min_runtime_s"]),
            "max_pending_jobs": text(q["max_pending_jobs"]),
            "model_guarantees": ", ".join(f"{m}={render.gpus(v)}" for m, v in sorted(q["model_guarantees_milli"].items())),
            "memory_guarantee": "" if q["memory_guarantee_mib"] is None else render.gib(q["memory_guarantee_mib"]),
            "memory_limit": "" if q["memory_limit_mib"] is None else render.gib(q["memory_limit_mib"])}


def _number(raw: str, field: str, unit: str, scale: float) -> int:
    try:
        value = float(raw)
    except ValueError:
        raise Invalid(field, f"must be a number of {unit}, got {raw!r}") from None
    if not 0 <= value <= 1_000_000:
        raise Invalid(field, f"must be between 0 and 1000000 {unit}")
    return int(round(value * scale))


def _gpus_field(form, field: str, *, optional: bool, unit: str = "GPUs", scale: float = 1000) -> int | None:  # noqa: ANN001
    """A form value in GPUs ('1.5') -> milli (or GiB -> MiB); empty -> None when optional."""
    raw = str(form.get(field) or "").strip()
    if raw == "":
        if optional:
            return None
        raise Invalid(field, f"enter a number of {unit}, e.g. 2 or 0.5")
    return _number(raw, field, unit, scale)


def _whole(form, field: str) -> int | float | None:  # noqa: ANN001
    """An optional number (empty: none); priorities may be low, normal, high or critical."""
    raw = str(form.get(field) or "").strip().lower()
    if raw == "":
        return None
    if field == "max_priority" and raw in PRIORITY_CLASSES:
        return PRIORITY_CLASSES[raw]
    try:
        return float(raw) if field == "max_min_runtime_s" else int(raw)
    except ValueError:
        raise Invalid(field, f"must be a number (or empty for none), got {raw!r}") from None


def _model_guarantees(form) -> dict[str, int] | None:  # noqa: ANN001
    """'H100-80GB=4, A100-80GB=2' (GPUs) -> {model: milli}; empty -> None."""
    out = {}
    for item in str(form.get("model_guarantees") or "").replace("\n", ",").split(","):
        if not item.strip():
            continue
        model, sep, raw = item.partition("=")
        if not sep or not model.strip():
            raise Invalid("model_guarantees", f"use MODEL=GPUS, e.g. H100-80GB=4; got {item.strip()!r}")
        out[model.strip()] = _number(raw.strip(), "model_guarantees", "GPUs", 1000)
    return out or None


def policy_body(form) -> dict:  # noqa: ANN001
    """The edit form -> a QueueUpdate body (every field: empty ones remove their limit)."""
    body = {"guarantee_milli": _gpus_field(form, "guarantee", optional=False),
            "limit_milli": _gpus_field(form, "limit", optional=True),
            "max_priority": _whole(form, "max_priority"),
            "allow_non_preemptible": form.get("allow_non_preemptible") == "on",
            "max_min_runtime_s": _whole(form, "max_min_runtime_s"),
            "max_pending_jobs": _whole(form, "max_pending_jobs"),
            "model_guarantees_milli": _model_guarantees(form),
            "memory_guarantee_mib": _gpus_field(form, "memory_guarantee", optional=True, unit="GiB", scale=1024),
            "memory_limit_mib": _gpus_field(form, "memory_limit", optional=True, unit="GiB", scale=1024)}
    weight = str(form.get("weight") or "").strip()
    if weight:
        try:
            body["weight"] = float(weight)
        except ValueError:
            raise Invalid("weight", f"must be a number, got {weight!r}") from None
    return body


@router.post("/queues/{team}/{name}")
@dashboard_page
def update_queue(request: Request, who, team: str, name: str):  # noqa: ANN001
    require_admin_page(who)
    form = request.state.form
    db = database(request)
    try:
        admin_service.update_queue(db, who, name, team, policy_body(form))
    except Invalid as err:
        match = [q for q in queries.overview(db)["queues"] if q["team"] == team and q["name"] == name]
        if not match:
            raise
        form_values = {k: str(form.get(k) or "") for k in FORM_FIELDS}
        form_values["allow_non_preemptible"] = form.get("allow_non_preemptible") == "on"
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
    scheduler = scheduler_settings.current(db, who, request.app.state.settings.scheduler_policy)
    return render.page("admin.html", who=who, nav="admin", users=users, tokens=tokens, teams=teams,
                       scheduler=scheduler, saved=request.query_params.get("saved"))
