"""Small shared helpers for shaping answers: ISO timestamps, id parsing."""

from __future__ import annotations

from datetime import datetime, timezone

from controlplane.services.errors import NotFound


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_id(value: str, what: str) -> int:
    """Ids are decimal strings; anything else is an id nobody can see (404)."""
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise NotFound(f"no {what} with id {value!r}") from None
    if not 0 < n < 2**63:
        raise NotFound(f"no {what} with id {value!r}")
    return n
