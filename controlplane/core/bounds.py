"""What the database can store, as pydantic types: every integer and string a client sends is
bounded here, so out-of-range input is a 422 naming the field, never a database error (500).

Integer columns are 32-bit (``Integer``) or 64-bit (``BigInteger``); text may not hold NUL on
PostgreSQL. Ids are decimal ASCII strings without sign or leading zeros, below 10**18 (well within
a 64-bit column), so ``"+1"``, ``"0_2"``, ``"١"`` or ``"²"`` never reach ``int()``.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1
ID_PATTERN = r"^[1-9][0-9]{0,17}$"
NO_NUL = r"^[^\x00]*$"  # PostgreSQL text and JSON cannot hold U+0000

Int32 = Annotated[int, Field(ge=-INT32_MAX - 1, le=INT32_MAX)]
Count32 = Annotated[int, Field(ge=0, le=INT32_MAX)]
Count64 = Annotated[int, Field(ge=0, le=INT64_MAX)]
WireId = Annotated[str, Field(pattern=ID_PATTERN, description="a decimal id the server issued")]


def text(max_length: int) -> object:
    """A string of at most ``max_length`` characters without NUL (use as ``Annotated[str, text(n)]``)."""
    return Field(max_length=max_length, pattern=NO_NUL)


def canonical_id(value: object) -> int | None:
    """The id ``value`` spells in canonical form (``"42"``), else None (``"042"``, ``"+1"``, ``"١"``)."""
    if not isinstance(value, str) or not 0 < len(value) <= 18 or not value.isascii():
        return None
    if not value.isdigit() or value[0] == "0":
        return None
    return int(value)
