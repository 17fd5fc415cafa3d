"""Admin dashboard served by the control plane (Jinja2 + htmx); mount ``router`` on the app."""

from controlplane.web.router import router

__all__ = ["router"]
