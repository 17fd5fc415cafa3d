"""Overview, Nodes and Events pages."""

from __future__ import annotations

import time

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from controlplane import history
from controlplane.core.states import NodeState
from controlplane.services import events as events_service
from controlplane.services import nodes as nodes_service
from controlplane.services.errors import Invalid, NotFound
from controlplane.web import queries, render
from controlplane.web.pagekit import dashboard_page, require_admin_page
from controlplane.web.session import database

router = APIRouter(include_in_schema=False)

HISTORY_WINDOW_S = 6 * 3600
NODE_FILTERS = ("", *(s.value for s in NodeState), "cordoned")


def _int_arg(request: Request, name: str, default: int) -> int:
    raw = request.query_params.get(name)
    if raw in (None, ""):
        return default
    try:
        return int(raw)
    except ValueError:
        raise Invalid(name, f"must be a whole number, got {raw!r}") from None


@router.get("/")
@dashboard_page
def overview(request: Request, who):  # noqa: ANN001
    db = database(request)
    data = queries.overview(db, None if who.is_admin else who.team_id)
    since = time.time() - HISTORY_WINDOW_S
    charts = {"cluster": history.series(db, "cluster", since=since).get("all")}
    return render.page("overview.html", who=who, nav="overview", d=data, charts=charts)


@router.get("/nodes")
@dashboard_page
def nodes(request: Request, who):  # noqa: ANN001
    search = request.query_params.get("q", "")[:200]
    state = request.query_params.get("state", "")
    if state not in NODE_FILTERS:
        raise Invalid("state", f"use one of {', '.join(f for f in NODE_FILTERS if f)}")
    data = queries.nodes_page(database(request), page=_int_arg(request, "page", 1), search=search,
                              state=state)
    return render.page("nodes.html", who=who, nav="nodes", d=data, q=search, state=state)


@router.get("/nodes/{name}")
@dashboard_page
def node(request: Request, who, name: str):  # noqa: ANN001
    db = database(request)
    detail = queries.node_detail(db, name)
    if detail is None:
        raise NotFound(f"no node named {name!r}")
    sparks = {a["uuid"]: history.telemetry_points(db, a["uuid"]) for a in detail["accelerators"]}
    recent = events_service.list_events(db, who, node=name, limit=20)["items"]
    return render.page("node.html", who=who, nav="nodes", n=detail, sparks=sparks, events=recent)


@router.post("/nodes/{name}/{action}")
@dashboard_page
def node_action(request: Request, who, name: str, action: str):  # noqa: ANN001
    require_admin_page(who)
    flags = {"cordon": (True, False), "uncordon": (False, False), "drain": (True, True)}
    if action not in flags:
        raise NotFound(f"no node action {action!r}; use cordon, uncordon or drain")
    cordon, drain = flags[action]
    nodes_service.set_cordon(database(request), who, name, cordon=cordon, drain=drain)
    return RedirectResponse(f"/nodes/{name}", status_code=303)


@router.get("/events")
@dashboard_page
def events(request: Request, who):  # noqa: ANN001
    cursor = request.query_params.get("cursor") or None
    job = request.query_params.get("job") or None
    node_name = request.query_params.get("node") or None
    page = events_service.list_events(database(request), who, job=job, node=node_name, limit=50,
                                      cursor=cursor)
    return render.page("events.html", who=who, nav="events", page=page, job=job or "",
                       node=node_name or "")

