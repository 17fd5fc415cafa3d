"""RFC 9457 problem+json, the one shape of every error, and the OpenAPI ``responses`` entries that
declare which errors a route can give."""

from __future__ import annotations

import copy

from controlplane.schemas.base import ApiModel

PROBLEM_MEDIA = "application/problem+json"


class FieldError(ApiModel):
    """One bad input: a dotted body path, a query parameter, a header, or ``body``."""

    field: str
    message: str


class Problem(ApiModel):
    """An error answer (RFC 9457)."""

    type: str = "about:blank"
    title: str
    status: int
    detail: str
    errors: list[FieldError] | None = None


WHY = {
    401: "no token, or an unknown, revoked or expired one",
    403: "the token's role may not do this",
    404: "unknown id or name (or one the caller may not see)",
    409: "the object's state forbids this (already exists, already final, in use)",
    413: "the request body is larger than the server accepts",
    422: "invalid input; `errors` names each bad field",
    429: "too many requests for this token; retry after `Retry-After` seconds",
    503: "the database is unreachable or not migrated; retry later",
}
HEADERS = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: {"Retry-After": {"description": "seconds to wait", "schema": {"type": "string"}}},
}
AUTHENTICATED = (401, 403, 429, 503)  # any route behind a token


def inline_refs(schema: dict) -> dict:
    """A JSON schema with every local ``$ref`` into its ``$defs`` replaced by the definition, so it
    can sit anywhere in an OpenAPI document (the specs are not recursive)."""
    defs = schema.get("$defs", {})

    def walk(node: object) -> object:
        if isinstance(node, dict):
            ref = node.get("$ref")
            if isinstance(ref, str) and ref.startswith("#/$defs/"):
                rest = {k: v for k, v in node.items() if k != "$ref"}
                return walk({**copy.deepcopy(defs[ref.removeprefix("#/$defs/")]), **rest})
            return {k: walk(v) for k, v in node.items() if k not in ("$defs", "discriminator")}
        if isinstance(node, list):
            return [walk(x) for x in node]
        return node

    return walk(schema)  # type: ignore[return-value]


def _bare(node: object) -> object:
    """Without titles and descriptions: the problem schema is repeated in every error response."""
    if isinstance(node, dict):
        return {k: _bare(v) for k, v in node.items() if k not in ("title", "description")
                or isinstance(v, dict)}
    return [_bare(x) for x in node] if isinstance(node, list) else node


_PROBLEM_SCHEMA = _bare(inline_refs(Problem.model_json_schema(mode="serialization")))


def problem_responses(*codes: int) -> dict[int | str, dict]:
    """FastAPI ``responses=`` entries: each status answered as problem+json."""
    out: dict[int | str, dict] = {}
    for code in sorted(set(codes)):
        entry: dict = {"description": WHY[code],
                       "content": {PROBLEM_MEDIA: {"schema": copy.deepcopy(_PROBLEM_SCHEMA)}}}
        if code in HEADERS:
            entry["headers"] = HEADERS[code]
        out[code] = entry
    return out
