"""Cursor pages: lists are newest first, and a cursor is the last id a page returned."""

from __future__ import annotations

from controlplane.services.errors import Invalid


def parse_cursor(cursor: str | None) -> int | None:
    """The id a cursor stands for; anything this server did not hand out is a 422."""
    if cursor in (None, ""):
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 19 or int(cursor) >= 2**63:
        raise Invalid("cursor", "not a cursor this server returned")
    return int(cursor)
