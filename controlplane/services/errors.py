"""Service errors carrying an HTTP status and a message a person can act on (-> problem+json)."""

from __future__ import annotations


class ServiceError(Exception):
    status = 400
    title = "Bad request"

    def __init__(self, detail: str, *, errors: list[dict] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


class Unauthorized(ServiceError):
    status, title = 401, "Unauthorized"


class Forbidden(ServiceError):
    status, title = 403, "Forbidden"


class NotFound(ServiceError):
    status, title = 404, "Not found"


class Conflict(ServiceError):
    status, title = 409, "Conflict"


class Invalid(ServiceError):
    """422 naming the field that is wrong."""

    status, title = 422, "Invalid input"

    def __init__(self, field: str, message: str, *, more: list[dict] | None = None):
        items = [{"field": field, "message": message}] + (more or [])
        super().__init__("; ".join(f"{i['field']}: {i['message']}" for i in items), errors=items)

    @classmethod
    def many(cls, items: list[dict]) -> Invalid:
        first, *rest = items or [{"field": "body", "message": "invalid input"}]
        return cls(first["field"], first["message"], more=rest)


class Unavailable(ServiceError):
    status, title = 503, "Service unavailable"


class TooManyRequests(ServiceError):
    """429 with the seconds after which a retry may succeed (sent as Retry-After)."""

    status, title = 429, "Too many requests"

    def __init__(self, detail: str, *, retry_after_s: float):
        super().__init__(detail)
        self.retry_after_s = retry_after_s


class TooLarge(ServiceError):
    status, title = 413, "Content too large"


MAX_INT = 2**31 - 1  # bound for any count a client sends, so huge values get a 422, not a DB error


def check_bounded(field: str, value: int | float | None, *, lo: float = 0, hi: float = MAX_INT) -> None:
    if value is not None and not (lo <= value <= hi):
        raise Invalid(field, f"must be between {lo:g} and {hi:g}, got {value}")
