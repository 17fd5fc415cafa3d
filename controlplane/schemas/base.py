"""Base classes and field types of the user API: answers read as attributes (and, for scripts
written against the dict-returning SDK, as ``obj["field"]``); writes refuse unknown fields."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from controlplane.core.bounds import NO_NUL

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"

Name = Annotated[str, Field(pattern=NAME_PATTERN, description=NAME_RULE)]
NodeName = Annotated[str, Field(min_length=1, max_length=253, pattern=NO_NUL)]
Timestamp = datetime  # ISO-8601 UTC on the wire ("2026-01-01T00:00:00Z")


class ApiModel(BaseModel):
    """An answer of the API. Unknown fields from a newer server are ignored by older clients."""

    model_config = ConfigDict(extra="ignore")

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        """``job.get("status")`` reads like the dicts the SDK returned before it was typed."""
        return getattr(self, key) if key in type(self).model_fields else default


class WriteModel(BaseModel):
    """A request body: unknown fields are a 422 naming them."""

    model_config = ConfigDict(extra="forbid")
