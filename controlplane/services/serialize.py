"""Small shared helpers for shaping answers: ISO timestamps, id parsing."""

from __future__ import annotations

from datetime import datetime, timezone

from controlplane.core.bounds import canonical_id
from controlplane.services.errors import NotFound


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_id(value: str, what: str) -> int:
    """Ids are canonical decimal strings ("42"); anything else ("+42", "042", "٤٢") is an id
    nobody can see (404), never another spelling of a real one."""
    n = canonical_id(value)
    if n is None:
        raise NotFound(f"no {what} with id {value!r}")
    return n
