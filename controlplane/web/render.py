"""Jinja2 environment of the dashboard (templates shipped in the package), display filters, and
the security headers of every page (no inline script may run: behaviour lives in static/app.js)."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse

from controlplane.core.states import UNFINISHED_STATES, JobState
from controlplane.web.session import CSRF_FIELD, CSRF_HEADER, page_csrf

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
CONTENT_SECURITY_POLICY = "; ".join([
    "default-src 'self'", "script-src 'self'", "style-src 'self' 'unsafe-inline'",
    "img-src 'self' data:", "connect-src 'self'", "object-src 'none'", "base-uri 'none'",
    "frame-ancestors 'none'", "form-action 'self'"])
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


def gpus(milli: int | float | None) -> str:
    """1500 milli -> '1.5'; whole numbers without decimals."""
    value = (milli or 0) / 1000
    return f"{value:.0f}" if value == int(value) else f"{value:.2f}".rstrip("0")


def gib(mib: int | float | None) -> str:
    value = (mib or 0) / 1024
    return f"{value:.0f}" if value >= 100 or value == int(value) else f"{value:.1f}"


def pct(part: float | None, whole: float | None) -> float:
    if not whole:
        return 0.0
    return max(0.0, min(100.0, 100.0 * (part or 0) / whole))


def ago(ts: float | str | None) -> str:
    """Epoch seconds or ISO string -> '3m ago'."""
    if ts is None:
        return "never"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    delta = max(0.0, time.time() - ts)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"{int(delta // size)}{unit} ago"
    return f"{int(delta)}s ago"


def from_now(ts: float | None) -> str:
    """A time ahead, as 'in 12m' ('now' when it is not ahead any more)."""
    delta = (ts or 0) - time.time()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if delta >= size:
            return f"in {int(delta // size)}{unit}"
    return f"in {int(delta)}s" if delta >= 1 else "now"


def when(ts: float | str | None) -> str:
    if ts is None:
        return "—"
    if isinstance(ts, str):
        ts = datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()
    return datetime.fromtimestamp(ts, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")


def tojson_script(value: object) -> Markup:
    """JSON safe to embed in <script type="application/json">."""
    text = json.dumps(value, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e")
    return Markup(text)


def kv(data: dict | None) -> str:
    """{'limit_milli': 2000} -> 'limit_milli=2000' (event details when there is no reason)."""
    return ", ".join(f"{k}={v}" for k, v in sorted((data or {}).items()))


_env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["html"]),
                   trim_blocks=True, lstrip_blocks=True)
_env.filters.update(gpus=gpus, gib=gib, ago=ago, when=when, from_now=from_now, json_script=tojson_script, kv=kv)
_env.globals.update(pct=pct, JobState=JobState, UNFINISHED=[s.value for s in UNFINISHED_STATES],
                    JOB_STATES=[s.value for s in JobState], csrf_token=page_csrf,
                    CSRF_FIELD=CSRF_FIELD, CSRF_HEADER=CSRF_HEADER)


def page(template: str, status_code: int = 200, **context) -> HTMLResponse:  # noqa: ANN003
    return HTMLResponse(_env.get_template(template).render(**context), status_code=status_code,
                        headers=SECURITY_HEADERS)
