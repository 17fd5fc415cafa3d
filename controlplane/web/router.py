"""The dashboard: every page module's router, assembled in one place (mounted by the app factory).

Pages are server-rendered (Jinja2) and call the same services as the REST API with the signed-in
user's principal, so members see exactly what the API would show them. Writes are POST forms
(SameSite=strict cookie) that redirect back (or answer an htmx fragment).
"""

from __future__ import annotations

from fastapi import APIRouter

from controlplane.web import (assets, pages, pages_controls, pages_jobs, pages_queues, pages_signin,
                              pages_usage)


def dashboard_router() -> APIRouter:
    """All dashboard routes (left out of the OpenAPI document)."""
    router = APIRouter(include_in_schema=False)
    for module in (pages_signin, pages, pages_jobs, pages_queues, pages_controls, pages_usage, assets):
        router.include_router(module.router)
    return router
