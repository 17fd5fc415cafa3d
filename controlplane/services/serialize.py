"""Small shared helpers for shaping answers: ISO timestamps, id parsing."""

from __future__ import annotations

from datetime import datetime, timezone

from controlplane.services.errors import NotFound


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, tz=timezone.utc).isoformat().replace("+00:00", "Z")


def parse_id(value: str, what: str) -> int:
    """Ids are canonical decimal strings (ASCII digits, no sign or leading zero, below 2**63);
    anything else is an id nobody can see (404)."""
    if (not isinstance(value, str) or not value.isascii() or not value.isdigit()
            or value.startswith("0") or len(value) > 19 or int(value) >= 2**63):
        raise NotFound(f"no {what} with id {value!r}")
    return int(value)
