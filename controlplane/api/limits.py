"""Request limits applied before any work: body size (before parsing or authentication), per-token
rate limits, and bounded long-lived streams."""

from __future__ import annotations

import hashlib
import threading
import time

from controlplane.api.problems import problem
from controlplane.services.errors import TooManyRequests


class BodyLimit:
    """Pure ASGI middleware: a body larger than ``max_bytes`` is refused with 413 before anything
    parses it or authenticates the caller. A declared Content-Length is checked up front; a body
    without one (chunked) is read here, at most ``max_bytes`` of it, and then handed on."""

    def __init__(self, app, max_bytes: int) -> None:  # noqa: ANN001
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send) -> None:  # noqa: ANN001
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS", "DELETE"):
            await self.app(scope, receive, send)
            return
        length = dict(scope.get("headers") or []).get(b"content-length")
        if length is not None:
            if not length.isdigit() or int(length) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        body, more = b"", True
        while more:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
        replayed = False

        async def replay():  # noqa: ANN202
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope, receive, send) -> None:  # noqa: ANN001
        resp = problem(413, "Content too large",
                       f"request bodies are limited to {self.max_bytes} bytes (GPUPOOL_MAX_BODY_BYTES)",
                       headers={"Connection": "close"})
        await resp(scope, receive, send)


class RateLimiter:
    """Token buckets per key (a token's hash): ``rate`` requests per second, bursts of ``burst``."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last refill)
        self._lock = threading.Lock()

    def take(self, token: str) -> None:
        """Spend one request of ``token``'s budget, or raise 429 saying when to retry."""
        key = hashlib.sha256(token.encode()).hexdigest()[:32]
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise TooManyRequests(f"rate limit of {self.rate:g} requests/s per token exceeded "
                                      "(GPUPOOL_RATE_LIMIT_PER_S); slow down and retry",
                                      retry_after_s=(1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens - 1.0, now)
            if len(self._buckets) > 100_000:  # bounded: idle buckets are full anyway
                self._buckets.clear()


class Slots:
    """At most ``limit`` holders at once (e.g. log followers); the next one gets 429."""

    def __init__(self, limit: int, what: str) -> None:
        self.limit, self.what = limit, what
        self.used = 0
        self._lock = threading.Lock()

    def acquire(self) -> int:
        with self._lock:
            if self.used >= self.limit:
                raise TooManyRequests(f"{self.limit} {self.what} already open on this server; retry later",
                                      retry_after_s=5.0)
            self.used += 1
            return self.used

    def release(self, _slot: int) -> None:
        with self._lock:
            self.used -= 1
