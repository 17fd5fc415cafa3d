"""Typed HTTP client for the gpupool REST API (docs/api-contract.md); also the Python SDK.

Calls return the API's schemas (``controlplane.schemas``: ``Job``, ``Node``, ``Queue``...), read
as attributes (``job.status``; ``job["status"]`` still works for scripts written against the
dict-returning SDK). Every failed call raises ``GpupoolError`` carrying the server's problem+json
(status, title, detail, field errors), so callers show one actionable line instead of a traceback.

    from controlplane.client import GpupoolClient
    with GpupoolClient("http://127.0.0.1:8080", token) as c:
        job = c.submit_job({"name": "hello", "command": ["echo", "hi"], "resources": {"gpu": 0.25}})
        c.wait_for_job(job.id)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ValidationError

from controlplane.core.states import FINAL_STATES
from controlplane.core.tls import CABundleError, is_untrusted_certificate, verify_with
from controlplane.schemas import (AcceleratorHealthChange, AcceleratorList, AcceleratorOnNode,
                                  BootstrapToken, BootstrapTokenCreate, BootstrapTokenList, Capacity,
                                  EventList, EventPage, Health, Job, JobPage, Node, NodeList, Queue,
                                  QueueCreate, QueueList, QueueUpdate, SchedulerSettings,
                                  SchedulerSettingsUpdate, Team, TeamCreate, TeamList, TokenCreate,
                                  TokenCreated, TokenList, TokenRevoked, User, UserCreate, UserList,
                                  Whoami)
from controlplane.schemas.usage import JobUsage, UsageReport

DEFAULT_SERVER = "http://127.0.0.1:8080"
Json = dict[str, Any]
M = TypeVar("M", bound=BaseModel)


class GpupoolError(Exception):
    """An API call failed; ``str(err)`` is one line a person can act on."""

    def __init__(self, message: str, *, status: int | None = None, title: str = "",
                 detail: str = "", errors: list[Json] | None = None, problem: Json | None = None):
        super().__init__(message)
        self.status = status
        self.title = title
        self.detail = detail
        self.errors = errors or []
        self.problem = problem or {}

    @classmethod
    def from_response(cls, resp: httpx.Response) -> GpupoolError:
        """Build the error from a problem+json answer (or whatever text the server sent)."""
        problem: Json = {}
        try:
            body = resp.json()
            if isinstance(body, dict):
                problem = body
        except ValueError:
            pass
        title = str(problem.get("title") or resp.reason_phrase or "error")
        detail = problem.get("detail")
        if not isinstance(detail, str):
            # FastAPI's default {"detail": [...]} or a non-string detail
            detail = _flatten_detail(detail) if detail else (resp.text.strip()[:300] if not problem else "")
        errors = problem.get("errors") if isinstance(problem.get("errors"), list) else []
        message = detail or title
        field_msgs = [f"{e.get('field')}: {e.get('message')}" for e in errors
                      if isinstance(e, dict) and e.get("field") and str(e.get("field")) not in message]
        if field_msgs:
            message = f"{message} ({'; '.join(field_msgs)})"
        return cls(f"{resp.status_code} {title}: {message}" if message != title
                   else f"{resp.status_code} {title}",
                   status=resp.status_code, title=title, detail=detail or "", errors=errors,
                   problem=problem)


def invalid_input(err: ValidationError) -> GpupoolError:
    """Input the SDK refuses before sending it, worded like the server's 422."""
    errors = [{"field": ".".join(str(x) for x in e["loc"]) or "body", "message": e["msg"]}
              for e in err.errors()]
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
    return GpupoolError(f"invalid input: {detail}", title="Invalid input", detail=detail, errors=errors)


def _flatten_detail(detail: Any) -> str:
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(x) for x in item.get("loc", []) if x != "body")
                parts.append(f"{loc}: {item.get('msg')}" if loc else str(item.get("msg")))
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)


class GpupoolClient:
    """One server, one token. Methods return ``controlplane.schemas`` objects."""

    def __init__(self, server: str = DEFAULT_SERVER, token: str | None = None, *,
                 timeout: float = 30.0, transport: httpx.BaseTransport | None = None,
                 ca_bundle: str | os.PathLike | None = None):
        """``ca_bundle`` (else GPUPOOL_CA_BUNDLE): PEM certificates to trust for an https server."""
        self.server = server.rstrip("/")
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        try:
            verify = verify_with(ca_bundle or os.environ.get("GPUPOOL_CA_BUNDLE"))
        except CABundleError as e:
            raise GpupoolError(str(e)) from None
        self._http = httpx.Client(base_url=self.server, headers=headers, timeout=timeout,
                                  transport=transport, verify=verify)

    # -- plumbing -------------------------------------------------------------------------
    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> GpupoolClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        try:
            resp = self._http.request(method, path, **kw)
        except httpx.TimeoutException as e:
            raise GpupoolError(f"timed out talking to {self.server} ({type(e).__name__})") from e
        except httpx.HTTPError as e:
            raise GpupoolError(self._unreachable(e)) from e
        if resp.status_code >= 400:
            raise GpupoolError.from_response(resp)
        return resp

    def _unreachable(self, e: httpx.HTTPError) -> str:
        if is_untrusted_certificate(e):
            return (f"the TLS certificate of {self.server} is not trusted ({e}); pass --ca-bundle "
                    "with the PEM of its CA (or set GPUPOOL_CA_BUNDLE)")
        return f"cannot reach the gpupool server at {self.server}: {e}"

    def _call(self, model: type[M], method: str, path: str, **kw: Any) -> M:
        """One call whose JSON answer is ``model``."""
        resp = self._request(method, path, **kw)
        try:
            return model.model_validate_json(resp.content)
        except ValidationError as e:
            raise GpupoolError(f"the server at {self.server} answered {method} {path} with something "
                               f"other than a {model.__name__} ({resp.headers.get('content-type', '?')}): "
                               f"{str(e).splitlines()[0]}") from e

    @staticmethod
    def _body(model: type[BaseModel], **fields: Any) -> dict[str, Any]:
        """``fields`` checked against the request schema (same messages as the server's 422)."""
        try:
            return model.model_validate(fields).model_dump(mode="json", include=set(fields))
        except ValidationError as e:
            raise invalid_input(e) from None

    @staticmethod
    def _params(**kw: Any) -> dict[str, Any]:
        return {k: v for k, v in kw.items() if v is not None}

    # -- health ---------------------------------------------------------------------------
    def health(self) -> Health:
        return self._call(Health, "GET", "/healthz")

    def ready(self) -> Health:
        return self._call(Health, "GET", "/readyz")

    def whoami(self) -> Whoami:
        return self._call(Whoami, "GET", "/api/v1/whoami")

    # -- jobs -----------------------------------------------------------------------------
    def submit_job(self, spec: Mapping[str, Any] | BaseModel, *,
                   idempotency_key: str | None = None) -> Job:
        """Submit a spec (a mapping, or a ``workloads.specs`` model); 201 new, or the job an
        earlier submit with the same ``idempotency_key`` created."""
        body = spec.model_dump(mode="json") if isinstance(spec, BaseModel) else dict(spec)
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self._call(Job, "POST", "/api/v1/jobs", json=body, headers=headers)

    def list_jobs(self, *, status: str | None = None, queue: str | None = None,
                  team: str | None = None, limit: int | None = None,
                  cursor: str | None = None, include_spec: bool = False) -> JobPage:
        return self._call(JobPage, "GET", "/api/v1/jobs", params=self._params(
            status=status, queue=queue, team=team, limit=limit, cursor=cursor,
            include="spec" if include_spec else None))

    def iter_jobs(self, **filters: Any) -> Iterator[Job]:
        """Every job matching the filters, following the cursor."""
        cursor = None
        while True:
            page = self.list_jobs(cursor=cursor, **filters)
            yield from page.items
            cursor = page.next_cursor
            if not cursor:
                return

    def get_job(self, job_id: str) -> Job:
        return self._call(Job, "GET", f"/api/v1/jobs/{_seg(job_id)}")

    def cancel_job(self, job_id: str) -> Job:
        return self._call(Job, "POST", f"/api/v1/jobs/{_seg(job_id)}/cancel")

    def job_logs(self, job_id: str, *, tail: int | None = None, rank: int | None = None) -> str:
        resp = self._request("GET", f"/api/v1/jobs/{_seg(job_id)}/logs",
                             params=self._params(tail=tail, rank=rank))
        return resp.text

    def follow_logs(self, job_id: str, *, tail: int | None = None,
                    rank: int | None = None) -> Iterator[str]:
        """Yield log text as it arrives until the job is final (the server closes the stream)."""
        params = self._params(tail=tail, rank=rank, follow="true")
        try:
            with self._http.stream("GET", f"/api/v1/jobs/{_seg(job_id)}/logs", params=params,
                                   timeout=httpx.Timeout(30.0, read=None)) as resp:
                if resp.status_code >= 400:
                    resp.read()
                    raise GpupoolError.from_response(resp)
                yield from resp.iter_text()
        except httpx.HTTPError as e:
            raise GpupoolError(f"log stream from {self.server} broke: {e}") from e

    def job_usage(self, job_id: str, *, since: str | None = None) -> JobUsage:
        """The job's measured use per slice, its GPU-hours and its right-sized request."""
        return self._call(JobUsage, "GET", f"/api/v1/jobs/{_seg(job_id)}/usage",
                          params=self._params(since=since))

    def usage_report(self, *, start: str | None = None, end: str | None = None,
                     by: str = "team") -> UsageReport:
        """GPU-hours allocated/used per team, queue, user, model or job over [start, end) (ISO
        times; defaults: the last 30 days)."""
        return self._call(UsageReport, "GET", "/api/v1/reports/usage",
                          params=self._params(**{"from": start, "to": end, "by": by}))

    def job_events(self, job_id: str) -> EventList:
        return self._call(EventList, "GET", f"/api/v1/jobs/{_seg(job_id)}/events")

    def wait_for_job(self, job_id: str, *, timeout: float = 600.0, interval: float = 0.5,
                     until: Callable[[Job], bool] | None = None,
                     on_update: Callable[[Job], None] | None = None) -> Job:
        """Poll until the job is final (or ``until(job)`` holds); raises GpupoolError on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            job = self.get_job(job_id)
            if on_update:
                on_update(job)
            if (until(job) if until else job.status in FINAL_STATES):
                return job
            if time.monotonic() >= deadline:
                raise GpupoolError(f"job {job_id} still {job.status} after {timeout:.0f}s")
            time.sleep(interval)

    # -- nodes and capacity ---------------------------------------------------------------
    def list_nodes(self) -> NodeList:
        return self._call(NodeList, "GET", "/api/v1/nodes")

    def get_node(self, name: str) -> Node:
        return self._call(Node, "GET", f"/api/v1/nodes/{_seg(name)}")

    def cordon_node(self, name: str) -> Node:
        return self._call(Node, "POST", f"/api/v1/nodes/{_seg(name)}/cordon")

    def uncordon_node(self, name: str) -> Node:
        return self._call(Node, "POST", f"/api/v1/nodes/{_seg(name)}/uncordon")

    def drain_node(self, name: str) -> Node:
        return self._call(Node, "POST", f"/api/v1/nodes/{_seg(name)}/drain")

    def list_accelerators(self) -> AcceleratorList:
        return self._call(AcceleratorList, "GET", "/api/v1/accelerators")

    def capacity(self) -> Capacity:
        return self._call(Capacity, "GET", "/api/v1/capacity")

    # -- teams, queues, users, tokens -----------------------------------------------------
    def list_teams(self) -> TeamList:
        return self._call(TeamList, "GET", "/api/v1/teams")

    def create_team(self, name: str) -> Team:
        return self._call(Team, "POST", "/api/v1/teams", json=self._body(TeamCreate, name=name))

    def list_queues(self) -> QueueList:
        return self._call(QueueList, "GET", "/api/v1/queues")

    def create_queue(self, name: str, team: str, **fields: Any) -> Queue:
        """``fields``: guarantee_milli, limit_milli (None: no limit), weight; members' policy
        (max_priority, allow_non_preemptible, max_min_runtime_s, max_pending_jobs); and
        model_guarantees_milli ({model: milli}), memory_guarantee_mib, memory_limit_mib."""
        return self._call(Queue, "POST", "/api/v1/queues",
                          json=self._body(QueueCreate, name=name, team=team, **fields))

    def update_queue(self, name: str, *, team: str | None = None, **fields: Any) -> Queue:
        """Change the given fields (those of ``create_queue``; None removes a limit); ``team``
        picks the queue when the name is in several."""
        return self._call(Queue, "PATCH", f"/api/v1/queues/{_seg(name)}",
                          params=self._params(team=team), json=self._body(QueueUpdate, **fields))

    def delete_queue(self, name: str, *, team: str | None = None) -> Queue:
        return self._call(Queue, "DELETE", f"/api/v1/queues/{_seg(name)}", params=self._params(team=team))

    def list_users(self) -> UserList:
        return self._call(UserList, "GET", "/api/v1/users")

    def create_user(self, name: str, team: str, role: str = "member") -> User:
        return self._call(User, "POST", "/api/v1/users",
                          json=self._body(UserCreate, name=name, team=team, role=role))

    def create_token(self, user: str, name: str, expires_in_s: float | None = None) -> TokenCreated:
        fields: dict[str, Any] = {"user": user, "name": name}
        if expires_in_s is not None:
            fields["expires_in_s"] = expires_in_s
        return self._call(TokenCreated, "POST", "/api/v1/tokens", json=self._body(TokenCreate, **fields))

    def list_tokens(self) -> TokenList:
        return self._call(TokenList, "GET", "/api/v1/tokens")

    def delete_token(self, token_id: str) -> TokenRevoked:
        return self._call(TokenRevoked, "DELETE", f"/api/v1/tokens/{_seg(token_id)}")

    def disable_user(self, name: str) -> User:
        """Refuse the user's tokens and end their dashboard sessions (their jobs keep running)."""
        return self._call(User, "POST", f"/api/v1/users/{_seg(name)}/disable")

    def enable_user(self, name: str) -> User:
        return self._call(User, "POST", f"/api/v1/users/{_seg(name)}/enable")

    def create_bootstrap_token(self, **rules: Any) -> BootstrapToken:
        """``rules``: name, expires_in_s, single_use, name_pattern (a regex node names must match)."""
        return self._call(BootstrapToken, "POST", "/api/v1/bootstrap-tokens",
                          json=self._body(BootstrapTokenCreate, **rules))

    def list_bootstrap_tokens(self) -> BootstrapTokenList:
        return self._call(BootstrapTokenList, "GET", "/api/v1/bootstrap-tokens")

    def revoke_bootstrap_token(self, token_id: str) -> TokenRevoked:
        return self._call(TokenRevoked, "DELETE", f"/api/v1/bootstrap-tokens/{_seg(token_id)}")

    # -- admin controls -------------------------------------------------------------------
    def get_scheduler(self) -> SchedulerSettings:
        return self._call(SchedulerSettings, "GET", "/api/v1/scheduler")

    def set_scheduler(self, policy: str, weights: Mapping[str, float] | None = None) -> SchedulerSettings:
        """The placement policy, and optionally plugin weights replacing its own (next cycle on)."""
        fields: dict[str, Any] = {"policy": policy}
        if weights is not None:
            fields["weights"] = dict(weights)
        return self._call(SchedulerSettings, "PUT", "/api/v1/scheduler",
                          json=self._body(SchedulerSettingsUpdate, **fields))

    def scheduler_dump(self) -> dict[str, Any]:
        """What the scheduler would decide now, with its input (replay it: gpupool bench replay)."""
        return self._request("GET", "/api/v1/scheduler/dump").json()

    def reset_scheduler(self) -> SchedulerSettings:
        """Back to the server's own settings (GPUPOOL_SCHEDULER_POLICY)."""
        return self._call(SchedulerSettings, "DELETE", "/api/v1/scheduler")

    def mark_accelerator_healthy(self, uuid: str) -> AcceleratorOnNode:
        return self._call(AcceleratorOnNode, "POST", f"/api/v1/accelerators/{_seg(uuid)}/mark-healthy")

    def mark_accelerator_unhealthy(self, uuid: str, reason: str | None = None) -> AcceleratorOnNode:
        """Cordon an accelerator: its jobs are stopped and requeued, nothing new lands on it."""
        body = self._body(AcceleratorHealthChange, reason=reason) if reason else None
        return self._call(AcceleratorOnNode, "POST", f"/api/v1/accelerators/{_seg(uuid)}/mark-unhealthy",
                          json=body)

    def list_events(self, *, job: str | None = None, node: str | None = None,
                    limit: int | None = None, cursor: str | None = None) -> EventPage:
        return self._call(EventPage, "GET", "/api/v1/events", params=self._params(
            job=job, node=node, limit=limit, cursor=cursor))


def _seg(value: str) -> str:
    """One URL path segment, so an id like '../x' cannot walk the path."""
    from urllib.parse import quote

    return quote(str(value), safe="")
