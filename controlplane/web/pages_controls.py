"""Admin controls in the dashboard: return an accelerator to service, disable or enable a user,
and set the scheduler's policy (forms post here and redirect back)."""

from __future__ import annotations

from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse

from controlplane.services import health, identity
from controlplane.services import scheduler_settings as sched
from controlplane.services.errors import Invalid, NotFound
from controlplane.web.pagekit import dashboard_page, require_admin_page
from controlplane.web.session import database

router = APIRouter(include_in_schema=False)


@router.post("/accelerators/{uuid}/mark-healthy")
@dashboard_page
def mark_healthy(request: Request, who, uuid: str):  # noqa: ANN001
    require_admin_page(who)
    settings = request.app.state.settings
    node = health.mark_healthy(database(request), who, uuid,
                               cordon_node_after=settings.unhealthy_gpus_to_cordon_node)
    return RedirectResponse(f"/nodes/{quote(node, safe='')}", status_code=303)


@router.post("/users/{name}/{action}")
@dashboard_page
def user_action(request: Request, who, name: str, action: str):  # noqa: ANN001
    require_admin_page(who)
    if action not in ("disable", "enable"):
        raise NotFound(f"no user action {action!r}; use disable or enable")
    identity.set_user_disabled(database(request), who, name, disabled=action == "disable")
    return RedirectResponse("/admin", status_code=303)


def parse_weights(text: str) -> dict[str, float] | None:
    """'fgd=1000, topology=1' -> {'fgd': 1000.0, 'topology': 1.0}; empty -> None (the policy's own)."""
    out: dict[str, float] = {}
    for item in text.replace("\n", ",").split(","):
        if not item.strip():
            continue
        plugin, sep, raw = item.partition("=")
        try:
            if not sep:
                raise ValueError
            out[plugin.strip()] = float(raw)
        except ValueError:
            raise Invalid("weights", f"use PLUGIN=WEIGHT, e.g. fgd=1000; got {item.strip()!r}") from None
    return out or None


@router.post("/admin/scheduler")
@dashboard_page
def set_scheduler(request: Request, who):  # noqa: ANN001
    require_admin_page(who)
    form = request.state.form
    body = {"policy": str(form.get("policy") or "").strip(),
            "weights": parse_weights(str(form.get("weights") or ""))}
    sched.update(database(request), who, body, request.app.state.settings.scheduler_policy)
    return RedirectResponse("/admin?saved=scheduler", status_code=303)
