"""Admin dashboard served by the control plane (Jinja2 + htmx); see ``router.dashboard_router``."""
