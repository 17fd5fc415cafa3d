"""HTTP client for the agent protocol (controlplane/core/wire.py) over httpx.

Errors are split so the main loop can act: ServerUnreachable (connection refused, timeout, 5xx:
keep running and buffer), NotAuthorized (401/403: re-register), Rejected (other 4xx: a bug or a
bad message; the caller logs and drops it). ``last_answer`` is when the control plane last
answered anything at all (even a 503 during a database outage): the agent's fencing clock.
"""

from __future__ import annotations

import os
import time
from typing import TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from controlplane.core import wire
from controlplane.core.tls import verify_with

T = TypeVar("T", bound=BaseModel)
PREFIX = "/api/v1/agent"


class AgentClientError(Exception):
    pass


class ServerUnreachable(AgentClientError):
    pass


class NotAuthorized(AgentClientError):
    pass


class Rejected(AgentClientError):
    pass


class AgentClient:
    def __init__(self, server_url: str, token: str | None = None, timeout: float = 10.0,
                 ca_bundle: str | os.PathLike | None = None) -> None:
        self.server_url = server_url.rstrip("/")
        self.token = token
        self._http = httpx.Client(base_url=self.server_url, timeout=timeout,
                                  verify=verify_with(ca_bundle))
        self.last_answer = time.monotonic()

    def close(self) -> None:
        self._http.close()

    def _call(self, method: str, path: str, body: BaseModel | None, answer: type[T], *,
              token: str | None = None, params: dict | None = None, timeout: float | None = None) -> T:
        headers = {}
        tok = token or self.token
        if tok:
            headers["Authorization"] = f"Bearer {tok}"
        kwargs: dict = {"headers": headers, "params": params}
        if body is not None:
            kwargs["content"] = body.model_dump_json()
            headers["Content-Type"] = "application/json"
        if timeout is not None:
            kwargs["timeout"] = timeout
        try:
            res = self._http.request(method, PREFIX + path, **kwargs)
        except httpx.HTTPError as exc:
            raise ServerUnreachable(f"{method} {self.server_url}{PREFIX}{path}: {exc!r}") from exc
        if _from_control_plane(res):  # not a proxy's error page: the control plane itself answered
            self.last_answer = time.monotonic()
        if res.status_code in (401, 403):
            raise NotAuthorized(f"{method} {path}: {res.status_code} {_detail(res)}")
        if res.status_code >= 500 or res.status_code in (404, 408, 429) and path == "/assignments":
            raise ServerUnreachable(f"{method} {path}: {res.status_code} {_detail(res)}")
        if res.status_code >= 400:
            raise Rejected(f"{method} {path}: {res.status_code} {_detail(res)}")
        try:
            return answer.model_validate_json(res.content or b"{}")
        except ValidationError as exc:
            raise Rejected(f"{method} {path}: unexpected answer: {exc}") from exc

    def register(self, request: wire.RegisterRequest, bootstrap_token: str) -> wire.RegisterResponse:
        return self._call("POST", "/register", request, wire.RegisterResponse, token=bootstrap_token)

    def heartbeat(self, hb: wire.Heartbeat) -> wire.HeartbeatResponse:
        return self._call("POST", "/heartbeat", hb, wire.HeartbeatResponse)

    def assignments(self, wait_s: float, epoch: int) -> wire.Assignments:
        return self._call("GET", "/assignments", None, wire.Assignments,
                          params={"wait": wait_s, "epoch": epoch}, timeout=wait_s + 10)

    def status(self, batch: wire.StatusBatch) -> wire.Ack:
        return self._call("POST", "/status", batch, wire.Ack)

    def logs(self, batch: wire.LogBatch) -> wire.Ack:
        return self._call("POST", "/logs", batch, wire.Ack)


def _from_control_plane(res: httpx.Response) -> bool:
    """gpupool answers JSON (problem+json for errors); a proxy in between answers HTML."""
    kind = res.headers.get("content-type", "")
    return kind.startswith(("application/json", "application/problem+json"))


def _detail(res: httpx.Response) -> str:
    try:
        data = res.json()
        return str(data.get("detail") or data.get("title") or data)[:300]
    except ValueError:
        return res.text[:300]
