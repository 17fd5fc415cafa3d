"""Cursor pages: lists are newest first, and a cursor is the last id a page returned."""

from __future__ import annotations

from controlplane.core.bounds import canonical_id
from controlplane.services.errors import Invalid


def parse_cursor(cursor: str | None) -> int | None:
    """The id a cursor stands for; anything this server did not hand out is a 422."""
    if cursor in (None, ""):
        return None
    value = canonical_id(cursor)
    if value is None:
        raise Invalid("cursor", "not a cursor this server returned")
    return value
